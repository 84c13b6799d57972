"""Selector scores and choices against values computed by hand on a tiny probability matrix."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.active.badge import Badge, gradient_embeddings, gradient_factors, kmeans_plus_plus
from algorithms.active.coreset import Coreset, k_center_greedy
from algorithms.active.entropy import Entropy, entropy_scores
from algorithms.active.least_confidence import LeastConfidence, least_confidence_scores
from algorithms.active.margin import Margin, margin_scores
from algorithms.active.random_selection import RandomSelection
from sim.interfaces.active import LearnerOutputs, lowest_unlabeled

P = np.array(
    [
        [0.5, 0.3, 0.2],
        [0.4, 0.4, 0.2],
        [0.9, 0.05, 0.05],
        [1 / 3, 1 / 3, 1 / 3],
    ]
)
NONE = np.zeros(4, bool)
NO_LABELS = np.full(4, -1)


def outputs(probabilities=P, embeddings=None) -> LearnerOutputs:
    if embeddings is None:
        embeddings = np.eye(len(probabilities), 2)
    return LearnerOutputs(probabilities, embeddings)


def test_scores_by_hand():
    np.testing.assert_allclose(margin_scores(P), [0.2, 0.0, 0.85, 0.0], atol=1e-12)
    np.testing.assert_allclose(least_confidence_scores(P), [0.5, 0.6, 0.1, 2 / 3], atol=1e-12)
    by_hand = [
        -(0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2)),  # 1.0297
        -(2 * 0.4 * np.log(0.4) + 0.2 * np.log(0.2)),  # 1.0549
        -(0.9 * np.log(0.9) + 2 * 0.05 * np.log(0.05)),  # 0.3944
        np.log(3),
    ]
    np.testing.assert_allclose(entropy_scores(P), by_hand, atol=1e-12)
    assert entropy_scores(np.array([[1.0, 0.0]]))[0] == 0.0  # 0 log 0 = 0


@pytest.mark.parametrize(
    ("selector", "labeled", "expected"),
    [
        (Margin(), NONE, [1, 3]),  # margins 0, 0: ties broken by index
        (Margin(), np.array([0, 0, 0, 1], bool), [1, 0]),
        (LeastConfidence(), NONE, [3, 1]),  # 2/3, then 0.6
        (Entropy(), NONE, [3, 1]),  # log 3, then 1.0549
        (Entropy(), np.array([0, 1, 0, 1], bool), [0, 2]),
    ],
)
def test_uncertainty_selectors_pick_by_hand(selector, labeled, expected):
    rng = np.random.default_rng(0)
    chosen = selector.select(outputs(), labeled, NO_LABELS, 2, rng)
    assert chosen.tolist() == expected


def test_lowest_unlabeled_large_pool_matches_full_sort():
    rng = np.random.default_rng(1)
    scores = rng.random(100_000)
    labeled = rng.random(100_000) < 0.3
    expected = np.flatnonzero(~labeled)[np.argsort(scores[~labeled], kind="stable")][:500]
    assert lowest_unlabeled(scores, labeled, 500).tolist() == expected.tolist()
    with pytest.raises(ValueError):
        lowest_unlabeled(scores[:3], np.array([1, 1, 0], bool), 2)


def test_lowest_unlabeled_takes_ties_by_index():
    # 40 points tied at 0.5 after 5 at 0.1: the 5 low ones, then the tied ones of lowest index.
    scores = np.r_[np.full(40, 0.5), np.full(5, 0.1)].astype(np.float32)
    chosen = lowest_unlabeled(scores, np.zeros(45, bool), 10)
    assert chosen.tolist() == [40, 41, 42, 43, 44, 0, 1, 2, 3, 4]
    labeled = np.zeros(45, bool)
    labeled[[0, 2]] = True  # labeled points are skipped; NaN ranks last
    scores[1] = np.nan
    chosen = lowest_unlabeled(scores, labeled, 8)
    assert chosen.tolist() == [40, 41, 42, 43, 44, 3, 4, 5]


def test_random_selection_is_unlabeled_distinct_and_seeded():
    labeled = np.arange(50) % 3 == 0
    first = RandomSelection().select(
        outputs(np.full((50, 2), 0.5)), labeled, None, 10, np.random.default_rng(3)
    )
    again = RandomSelection().select(
        outputs(np.full((50, 2), 0.5)), labeled, None, 10, np.random.default_rng(3)
    )
    assert first.tolist() == again.tolist()
    assert len(set(first.tolist())) == 10 and not labeled[first].any()


def test_k_center_greedy_by_hand():
    # 1-d embeddings at 0, 1, 5, 10; the point at 0 is labeled. Farthest is 10 (index 3); then
    # distances to {0, 10} are 1 and 5: index 2.
    embeddings = np.array([[0.0], [1.0], [5.0], [10.0]])
    labeled = np.array([1, 0, 0, 0], bool)
    assert k_center_greedy(embeddings, labeled, 2, np.random.default_rng(0)).tolist() == [3, 2]
    chosen = Coreset().select(
        outputs(P, embeddings), labeled, NO_LABELS, 3, np.random.default_rng(0)
    )
    assert chosen.tolist() == [3, 2, 1]


def test_badge_gradient_embedding_by_hand():
    h = np.array([[1.0, 2.0]])
    g = gradient_embeddings(np.array([[0.7, 0.2, 0.1]]), h)
    # a = p - e_0 = (-0.3, 0.2, 0.1); g = a (outer) h, row-major
    np.testing.assert_allclose(g, [[-0.3, -0.6, 0.2, 0.4, 0.1, 0.2]], atol=1e-12)


def test_badge_first_pick_is_largest_gradient_norm():
    # ||a||^2: 0.38, 0.56, 0.015, 2/3 (row 3's argmax is class 0); unit embeddings
    chosen = Badge().select(
        outputs(P, np.ones((4, 1))), NONE, NO_LABELS, 1, np.random.default_rng(0)
    )
    assert chosen.tolist() == [3]


def test_badge_factorised_kmeans_pp_equals_explicit_reference():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(300, 4))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    h = rng.normal(size=(300, 6))
    g = gradient_embeddings(p, h)

    def reference(k, stream):  # k-means++ on explicit vectors, as in BADGE's init_centers
        chosen = [int(np.argmax((g**2).sum(1)))]
        nearest = np.full(len(g), np.inf)
        for _ in range(k - 1):
            nearest = np.minimum(nearest, ((g - g[chosen[-1]]) ** 2).sum(1))
            nearest[chosen] = 0.0
            chosen.append(int(stream.choice(len(g), p=nearest / nearest.sum())))
        return chosen

    a, hh = gradient_factors(p, h)
    fast = kmeans_plus_plus(a, hh, 20, np.random.default_rng(9)).tolist()
    assert fast == reference(20, np.random.default_rng(9))
    assert len(set(fast)) == 20
