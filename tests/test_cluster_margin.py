"""Cluster-Margin: the round-robin sampling on a hand-built clustering, the average-linkage HAC
against scipy's, the two-level scheme where it is exact and its agreement where it is not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist, squareform
from sklearn.metrics import adjusted_rand_score

from algorithms.active.cluster_margin import (
    ClusterMargin,
    average_linkage,
    canonical,
    cell_distances,
    cut,
    exact_hac,
    round_robin,
    two_level_hac,
)
from sim.interfaces.active import LearnerOutputs

# a hand-built clustering of the candidates 10..19: C has 1 point, B 2, D 3, A 4
A, B, C, D = {10, 11, 12, 13}, {14, 15}, {16}, {17, 18, 19}
CANDIDATES = np.arange(10, 20)
CLUSTER = np.array([7, 7, 7, 7, 5, 5, 9, 2, 2, 2])  # A=7, B=5, C=9, D=2


def test_round_robin_visits_clusters_smallest_first_one_point_each_pass():
    for seed in range(20):
        chosen = round_robin(CANDIDATES, CLUSTER, 10, np.random.default_rng(seed))
        groups = [C, B, D, A, B, D, A, D, A, A]  # pass 1: C B D A; pass 2: B D A; ...
        assert all(int(c) in g for c, g in zip(chosen, groups, strict=True))
        assert sorted(chosen) == list(CANDIDATES)


def test_round_robin_takes_random_members_and_stops_at_k():
    picks = {
        tuple(round_robin(CANDIDATES, CLUSTER, 4, np.random.default_rng(s))) for s in range(50)
    }
    assert all(p[0] == 16 and p[1] in B and p[2] in D and p[3] in A for p in picks)
    assert len({p[3] for p in picks}) == 4  # every member of A is drawn in some seed
    same = round_robin(CANDIDATES, CLUSTER, 4, np.random.default_rng(3))
    np.testing.assert_array_equal(
        same, round_robin(CANDIDATES, CLUSTER, 4, np.random.default_rng(3))
    )
    with pytest.raises(ValueError, match="11 asked from 10"):
        round_robin(CANDIDATES, CLUSTER, 11, np.random.default_rng(0))


def test_cluster_margin_takes_round_robin_over_the_smallest_margins():
    # 12 pool points; 0 and 1 labeled; margins rise with the index except the labeled ones
    n = 12
    top = np.linspace(0.5, 0.95, n)
    probabilities = np.stack([top, 1 - top], axis=1).astype(np.float32)
    labeled = np.zeros(n, bool)
    labeled[[0, 1]] = True
    clusters = np.array([0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3])
    selector = ClusterMargin(clusters=4, margin_factor=2.0)
    outputs = LearnerOutputs(probabilities, np.zeros((n, 2), np.float32))
    chosen, state = selector.select(
        outputs, labeled, np.full(n, -1), 3, np.random.default_rng(0), {"clusters": clusters}
    )
    # k_m = 6 smallest margins among unlabeled: 2..7; their clusters: 1 (2,3,4), 2 (5), 3 (6,7)
    assert chosen[0] == 5 and chosen[1] in (6, 7) and chosen[2] in (2, 3, 4)
    assert state["clusters"] is clusters


def test_two_level_refuses_more_clusters_than_cells():
    x = np.random.default_rng(8).normal(size=(500, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="60 asked from 50 k-means cells"):
        two_level_hac(x, clusters=60, micro_clusters=50)


def test_more_clusters_than_cells_only_beyond_the_exact_limit():
    x = np.random.default_rng(8).normal(size=(60, 3))
    exact = ClusterMargin(clusters=50, micro_clusters=10, exact_limit=60)
    assert len(np.unique(exact.cluster(x, np.random.default_rng(0)))) == 50
    with pytest.raises(ValueError, match="clusters: must be <= micro_clusters 10 for a pool"):
        ClusterMargin(clusters=50, micro_clusters=10, exact_limit=59).cluster(
            x, np.random.default_rng(0)
        )
    ClusterMargin(clusters=50, micro_clusters=10, exact_limit=60).check_pool(60)
    with pytest.raises(ValueError, match="got 50; the pool has 61"):
        ClusterMargin(clusters=50, micro_clusters=10, exact_limit=60).check_pool(61)


def test_cluster_margin_needs_exactly_one_cut():
    with pytest.raises(ValueError, match="exactly one"):
        ClusterMargin(epsilon=1.0, clusters=3)
    with pytest.raises(ValueError, match="exactly one"):
        ClusterMargin()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_linkage_equals_scipy(seed):
    x = np.random.default_rng(seed).normal(size=(150, 4))
    merges = average_linkage(squareform(pdist(x)))
    from scipy.cluster.hierarchy import linkage

    np.testing.assert_allclose(np.sort(merges[:, 2]), linkage(x, "average")[:, 2], rtol=1e-12)
    for threshold in (1.0, 2.0, 3.0):
        np.testing.assert_array_equal(cut(merges, 150, threshold), exact_hac(x, threshold))
    np.testing.assert_array_equal(cut(merges, 150, clusters=6), exact_hac(x, clusters=6))


def test_weighted_average_linkage_equals_linkage_of_the_repeated_points():
    # a node of size s behaves as s copies of its point: same merge heights, zero-height
    # merges of the copies aside
    rng = np.random.default_rng(4)
    x, sizes = rng.normal(size=(40, 3)), rng.integers(1, 4, size=40)
    weighted = average_linkage(squareform(pdist(x)), sizes)
    repeated = exact_hac(np.repeat(x, sizes, axis=0), threshold=1.5)
    np.testing.assert_array_equal(cut(weighted, 40, 1.5), canonical(repeated[np.cumsum(sizes) - 1]))
    from scipy.cluster.hierarchy import linkage

    heights = linkage(np.repeat(x, sizes, axis=0), "average")[:, 2]
    np.testing.assert_allclose(np.sort(weighted[:, 2]), heights[heights > 0], rtol=1e-9)


def test_cell_distances_are_the_rms_of_point_distances():
    rng = np.random.default_rng(5)
    x, cell = rng.normal(size=(60, 3)), rng.integers(0, 4, size=60)
    sizes, rms = cell_distances(x, cell, 4)
    np.testing.assert_array_equal(sizes, np.bincount(cell, minlength=4))
    for i in range(4):
        for j in range(4):
            pair = cdist(x[cell == i], x[cell == j], "sqeuclidean")
            np.testing.assert_allclose(rms[i, j], np.sqrt(pair.mean()), rtol=1e-9)


def test_two_level_hac_is_exact_when_every_cell_is_a_point():
    x = np.random.default_rng(6).normal(size=(200, 5)).astype(np.float32)
    for threshold in (1.5, 2.5, 3.5):
        np.testing.assert_array_equal(
            two_level_hac(x, threshold, micro_clusters=200), exact_hac(x, threshold)
        )


def test_two_level_hac_agrees_with_exact_on_a_mixture():
    # 3,000 points around 30 centres in 16 dimensions; 600 k-means cells of 5 points on average.
    # Measured adjusted Rand index against exact HAC (seeds 0, 1, 2): 1.0 at 30 clusters;
    # 0.92-0.93 at 100; 0.44-0.47 at 300 (a cut finer than the cells resolve: 1,500 cells give
    # 0.66-0.71, 2,500 give 0.80-0.82). The agreement is the cells-per-cluster ratio's.
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(30, 16)) * 4
    x = (centres[rng.integers(0, 30, size=3000)] + rng.normal(size=(3000, 16))).astype(np.float32)
    coarse = two_level_hac(x, clusters=30, micro_clusters=600, seed=0)
    assert adjusted_rand_score(exact_hac(x, clusters=30), coarse) > 0.99
    finer = two_level_hac(x, clusters=100, micro_clusters=600, seed=0)
    assert adjusted_rand_score(exact_hac(x, clusters=100), finer) > 0.9
