"""Active covering: the strategies on hand-built pools with known answers, the cost arithmetic,
and the protocol end to end (oracle actors, a worker, resume, bad input)."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from algorithms.covering.active_covering import (
    ClassifierCover,
    ExploreCommit,
    OfflineCover,
    RandomCover,
    knn_radii,
    nearest_distances,
    squared_norms,
)
from envs.ball import UniformBall
from sim import seeding
from sim.errors import CohortError, ConfigError
from sim.protocols.covering.metrics import coverage_auc, excess_query_cost, queries_to_cover
from sim.protocols.covering.protocol import principal_components


def cover(algorithm, x, positive, batch=1, seed=0):
    """Run a strategy in-process against known labels; the answers in query order."""
    state = algorithm.start(x, seed)
    queries, found = [], []
    while sum(found) < positive.sum():
        indices = state.next(batch)
        assert len(indices) and not np.isin(indices, queries).any()
        state.observe(indices, positive[indices])
        queries += list(indices)
        found += list(positive[indices])
    return np.array(queries), np.array(found)


def two_clusters():
    """Positives: 5 points on a short segment at the origin; negatives: 15 points far away."""
    positives = np.stack([np.arange(5) * 0.1, np.zeros(5)], axis=1)
    negatives = np.stack([10 + np.arange(15) * 0.5, np.full(15, 3.0)], axis=1)
    x = np.concatenate([negatives, positives]).astype(np.float32)
    return x, np.r_[np.zeros(15, bool), np.ones(5, bool)]


def test_cost_arithmetic_by_hand():
    found = np.array([0, 1, 0, 1, 1, 0], bool)
    assert queries_to_cover(found, 3) == 5 and excess_query_cost(found, 3) == 2
    assert excess_query_cost(found, 4) is None  # never covered
    assert excess_query_cost(np.ones(3, bool), 3) == 0
    # a pool of 6 with 3 positives: the perfect curve 1,2,3,3,3,3 (area 15); this run's curve
    # 0,1,1,2,3,3 (area 10)
    assert coverage_auc(found, 3, 6) == pytest.approx(10 / 15)
    assert coverage_auc(found[:5], 3, 6) == pytest.approx(10 / 15)  # held after the last query
    assert coverage_auc(np.ones(3, bool), 3, 6) == 1.0


def test_distances_against_brute_force():
    rng = np.random.default_rng(0)
    x, centres = rng.normal(size=(50, 3)), rng.normal(size=(4, 3))
    scale = rng.uniform(0.5, 2, size=4)
    brute = (np.linalg.norm(x[:, None] - centres[None], axis=2) / scale).min(axis=1)
    np.testing.assert_allclose(nearest_distances(x, squared_norms(x), centres, scale), brute)
    sample = np.array([[0.0], [1.0], [3.0], [7.0]])
    # from 1.0: neighbours at 1 (0.0), 2 (3.0), 6 (7.0)
    np.testing.assert_allclose(knn_radii(sample, sample[[1]], 1), [1.0])
    np.testing.assert_allclose(knn_radii(sample, sample[[1]], 2), [2.0])
    np.testing.assert_allclose(knn_radii(sample, sample[[1]], 9), [6.0])  # k past the sample


def test_explore_commit_asks_only_exploration_misses():
    """Once one positive is found, the others (0.4 apart at most) are nearer than any negative:
    the excess is the negatives drawn before the first positive, in the seed's uniform order."""
    x, positive = two_clusters()
    queries, found = cover(ExploreCommit(explore=1), x, positive)
    order = seeding.rng(0, "covering_explore").permutation(len(x))
    first = int(np.flatnonzero(positive[order])[0])
    assert excess_query_cost(found, 5) == first
    np.testing.assert_array_equal(queries[: first + 1], order[: first + 1])
    assert found[first:].all()  # then only positives, each the nearest to those found so far
    for step in range(first + 1, len(queries)):
        known = x[queries[:step]][found[:step]]
        rest = np.setdiff1d(np.arange(len(x)), queries[:step])
        gaps = np.linalg.norm(x[rest][:, None] - known[None], axis=2).min(axis=1)
        assert np.linalg.norm(x[queries[step]] - known, axis=1).min() == pytest.approx(gaps.min())


def test_offline_cover_orders_by_scaled_distance_after_its_sample():
    x = np.arange(40, dtype=np.float32)[:, None]
    positive = (x[:, 0] < 12) | (x[:, 0] > 33)
    algorithm = OfflineCover(explore=10, k=2)
    queries, found = cover(algorithm, x, positive, batch=3)
    sample = queries[:10]
    centres = sample[positive[sample]]
    radius = np.array([np.sort(np.abs(x[sample, 0] - x[c, 0]))[2] for c in centres])
    score = (np.abs(x[:, 0][:, None] - x[centres, 0][None]) / radius).min(axis=1)
    rest = np.setdiff1d(np.arange(40), sample)
    expected = rest[np.lexsort((rest, score[rest]))]
    np.testing.assert_array_equal(queries[10:], expected[: len(queries) - 10])


def test_offline_cover_queries_the_balls_of_its_sample_in_2d():
    """A 2-d pool with a known answer. The sample's positives sit at (0,0) (twice), (1,0) and
    (0,1); with k = 2 (the centre and its duplicates excluded) each has radius 1. Of the four
    points left, (0,0.9) is 0.1 radii from (0,1) and (0.5,0) 0.5 radii from (0,0): both inside
    the balls, both positive, asked first; then (0,-1.5) at 1.5 radii and (3,0) at 2."""
    grid = [(x, y) for x in range(-4, 5, 4) for y in range(-4, 5, 4) if (x, y) != (0, 0)]
    sample = [(0, 0), (0, 0), (1, 0), (0, 1), *grid]  # 4 positives, 8 negatives 4 apart
    rest = [(3, 0), (0, 0.9), (0, -1.5), (0.5, 0)]
    x = np.array(sample + rest, np.float32)
    positive = np.zeros(len(x), bool)
    positive[[0, 1, 2, 3, len(sample) + 1, len(sample) + 3]] = True
    state = OfflineCover(explore=len(sample), k=2).start(x, 0)
    drawn = np.arange(len(sample))  # the sample, as if the uniform draw had picked it
    state.observe(drawn, positive[drawn])
    np.testing.assert_allclose(knn_radii(x[drawn], x[[0, 2, 3]], 2), [1.0, 1.0, 1.0])
    order = state.next(4)
    np.testing.assert_array_equal(order, len(sample) + np.array([1, 3, 2, 0]))


def test_knn_radius_ignores_duplicates():
    sample = np.array([[0.0], [0.0], [0.0], [2.0], [5.0]])
    np.testing.assert_allclose(knn_radii(sample, sample[:1], 1), [2.0])  # not 0
    np.testing.assert_allclose(knn_radii(sample[:3], sample[:1], 1), [1.0])  # only duplicates


def test_random_cover_is_the_seeded_permutation():
    x, positive = two_clusters()
    queries, found = cover(RandomCover(), x, positive, batch=4, seed=3)
    order = seeding.rng(3, "covering_explore").permutation(len(x))
    np.testing.assert_array_equal(queries, order[: len(queries)])
    assert excess_query_cost(found, 5) == np.flatnonzero(positive[order])[-1] + 1 - 5


def test_classifier_cover_finds_a_separable_class_after_exploring():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 2)).astype(np.float32)
    x[:, 0] += np.where(np.arange(400) < 100, 6.0, -6.0)
    positive = np.arange(400) < 100
    queries, found = cover(ClassifierCover(explore=20, retrain_every=50), x, positive, batch=10)
    explored_negatives = int((~found[:20]).sum())
    assert excess_query_cost(found, 100) == explored_negatives  # no negative after exploring


def test_active_beats_offline_and_random_and_has_the_rate():
    """On the 2-d ball the active learner's excess grows like n^{1/2} (Jiang & Rostamizadeh:
    O~(n^{(D-1)/D})); it is far below uniform order's at every size."""
    excess = {}
    for n in (2000, 8000):
        pool = UniformBall(dim=2, size=n).load_pool()
        positive = pool.y == 1
        _, found = cover(ExploreCommit(explore_power=0.5), pool.x, positive, batch=10)
        excess[n] = excess_query_cost(found, int(positive.sum()))
        _, found = cover(OfflineCover(explore_power=2 / 3), pool.x, positive, batch=10)
        assert excess[n] < excess_query_cost(found, int(positive.sum()))
        _, found = cover(RandomCover(), pool.x, positive, batch=50)
        assert excess[n] < excess_query_cost(found, int(positive.sum())) / 5
    slope = np.log(excess[8000] / excess[2000]) / np.log(4)
    assert 0.3 < slope < 0.7


def test_principal_components_keep_distances_at_full_rank():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(30, 2)) @ rng.normal(size=(2, 5))).astype(np.float32)  # rank 2
    projected = principal_components(x, 2)
    assert projected.shape == (30, 2)
    full = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.testing.assert_allclose(np.linalg.norm(projected[:, None] - projected[None], axis=2), full,
                               atol=1e-3)  # fmt: skip
    assert principal_components(x, None) is x


BALL = ["env=uniform_ball", "env.size=3000", "progress=false", "protocol.round_queries=200"]


def run(tmp_path, *overrides, name="run"):
    other_env = any(o.startswith("env=") for o in overrides)
    base = [o for o in BALL if not (other_env and o.startswith("env"))]
    return sim.run(sim.compose([*base, *overrides, f"output_dir={tmp_path / name}"]))


def test_protocol_matches_the_strategy_in_process(ray_session, tmp_path):
    result = run(tmp_path, "algorithm=explore_commit", "protocol.query_batch=7")
    pool = UniformBall(size=3000).load_pool()
    positive = pool.y == 1
    queries, found = cover(ExploreCommit(), pool.x, positive, batch=7)
    last = result.history[-1]
    assert last["positives"] == positive.sum() and last["covered"] == 1.0
    assert last["excess_query_cost"] == excess_query_cost(found, int(positive.sum()))
    assert last["coverage_auc"] == pytest.approx(coverage_auc(found, int(positive.sum()), 3000))
    need = int(np.ceil(0.9 * positive.sum()))
    assert last["excess_query_cost_90"] == excess_query_cost(found, need)
    np.testing.assert_array_equal(result.params, queries)  # the query log is the run's result
    # a record every 200 queries or just past (a step of 7 is never cut: rounds only report)
    steps = [r["queries"] for r in result.history]
    assert all(0 <= q - 200 * (i + 1) < 7 for i, q in enumerate(steps[:-1]))


def test_resume_with_a_larger_budget_continues_the_same_run(ray_session, tmp_path):
    # adaptive, a batch that divides the budget, and a round grid that does not
    extra = [
        "algorithm=explore_commit", "protocol.query_batch=5", "protocol.oracles=2", "env.size=1500"
    ]  # fmt: skip
    cut = run(tmp_path, *extra, "protocol.budget=300", name="cut")
    assert cut.history[-1]["covered"] == 0.0 and cut.history[-1]["queries"] == 300
    with pytest.raises(CohortError, match="spent its budget of 300 queries; raise"):
        run(tmp_path, *extra, "protocol.budget=300", "resume=true", name="cut")
    resumed = run(tmp_path, *extra, "resume=true", name="cut")
    pool = UniformBall(size=1500).load_pool()
    queries, found = cover(ExploreCommit(), pool.x, pool.y == 1, batch=5)  # the uninterrupted run
    np.testing.assert_array_equal(resumed.params, queries)
    assert resumed.history[-1]["excess_query_cost"] == excess_query_cost(found, int(found.sum()))
    with pytest.raises(CohortError, match="already found every positive"):
        run(tmp_path, *extra, "resume=true", name="cut")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algorithm=explore_commit", "env=synthetic"], "needs a pool env"),
        (["algorithm=explore_commit", "protocol.positive_class=5"], "the pool has classes 0..1"),
        (["algorithm=offline_cover", "protocol.pool_size=5000"], "must be <= the pool's 3000"),
        (["algorithm=explore_commit", "env.radius=0.0"], "class 1 has no point"),
        (["algorithm=offline_cover", "algorithm.k=0"], "algorithm.k: must be >= 1"),
        (["algorithm=explore_commit", "algorithm.explore_power=2"], "explore_power"),
        (["algorithm=explore_commit", "protocol.query_batch=0"], "query_batch: must be >= 1"),
    ],
)
def test_bad_covering_input(ray_session, tmp_path, overrides, message):
    with pytest.raises((ConfigError, CohortError), match=message):
        run(tmp_path, *overrides)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
