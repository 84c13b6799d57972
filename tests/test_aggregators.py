"""The robust aggregators against hand computations, the simulated attackers, and a small run in
which 30% sign-flip attackers break the mean but not the median."""

import numpy as np
import pytest

import sim
from algorithms.federated.aggregators import (
    Krum,
    Mean,
    Median,
    TrimmedMean,
    coordinate_median,
    krum,
    krum_scores,
    trimmed_mean,
)
from sim.interfaces.federated import CohortSampling, RoundUpdates
from sim.protocols.federated.attacks import attacked_delta, byzantine_clients, flip_labels

# Five clients' updates in R^2; the last is an outlier.
DELTAS = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, -1.0], [4.0, 2.0], [100.0, -50.0]])


def updates(deltas: np.ndarray, weights: np.ndarray | None = None) -> RoundUpdates:
    weights = np.ones(len(deltas)) if weights is None else weights
    return RoundUpdates(
        weighted_sum=(weights[:, None] * deltas).sum(0),
        weight=float(weights.sum()),
        count=len(deltas),
        expected_count=len(deltas),
        deltas=deltas.astype(np.float32),
    )


def test_median_and_trimmed_mean_by_hand():
    np.testing.assert_array_equal(coordinate_median(DELTAS), [3.0, 0.0])
    # fraction 0.2 of 5 drops one value at each end: x {2, 3, 4}, y {-1, 0, 1} -> (3, 0).
    np.testing.assert_allclose(trimmed_mean(DELTAS, 0.2), [3.0, 0.0])
    # fraction 0.1 drops nothing (floor(0.5) = 0): the plain mean.
    np.testing.assert_allclose(trimmed_mean(DELTAS, 0.1), DELTAS.mean(0))
    np.testing.assert_array_equal(coordinate_median(DELTAS[:4]), [2.5, 0.5])


def test_krum_by_hand():
    # f = 1: each update's score sums its n - f - 2 = 2 nearest squared distances.
    # Squared distances among the first four: d01=2, d02=5, d03=13, d12=5, d13=5, d23=10.
    # Scores: 0 -> 2+5=7, 1 -> 2+5=7, 2 -> 5+5=10, 3 -> 5+10=15; the outlier's are huge.
    scores = krum_scores(DELTAS, 1)
    np.testing.assert_allclose(scores[:4], [7, 7, 10, 15])
    assert scores[4] > 1e3
    np.testing.assert_array_equal(krum(DELTAS, 1), DELTAS[0])  # tie 0/1: the first
    with pytest.raises(ValueError, match="n >= f \\+ 3"):
        krum(DELTAS, 3)


def test_aggregators_on_round_updates():
    weights = np.array([1.0, 1.0, 2.0, 1.0, 1.0])
    round_updates = updates(DELTAS, weights)
    np.testing.assert_allclose(Mean().aggregate(round_updates), (weights @ DELTAS) / 6)
    np.testing.assert_array_equal(Median().aggregate(round_updates), [3.0, 0.0])
    np.testing.assert_allclose(TrimmedMean(0.2).aggregate(round_updates), [3.0, 0.0])
    # f None: ceil(5 / 2) - 2 = 1.
    np.testing.assert_array_equal(Krum().aggregate(round_updates), DELTAS[0])
    empty = updates(np.zeros((0, 2)))
    assert all(a.aggregate(empty) is None for a in (Mean(), Median(), TrimmedMean(), Krum()))
    # Fewer than f + 3 updates (a small Poisson round): no update, not a crash.
    assert Krum().aggregate(updates(DELTAS[:2])) is None
    assert Krum(f=3).aggregate(round_updates) is None
    with pytest.raises(ValueError, match="needs at least 6 clients a round"):
        Krum(f=3).check_sampling(CohortSampling("fixed", 100, 5))
    with pytest.raises(ValueError, match="fraction"):
        TrimmedMean(0.5)


def test_attacks():
    delta = np.array([1.0, -2.0], np.float32)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(attacked_delta("sign_flip", delta, 4.0, rng), [-4.0, 8.0])
    np.testing.assert_array_equal(attacked_delta("scale", delta, 3.0, rng), [3.0, -6.0])
    noise = attacked_delta("noise", np.zeros(10_000, np.float32), 2.0, rng)
    assert noise.std() == pytest.approx(2.0, rel=0.05)
    np.testing.assert_array_equal(attacked_delta("label_flip", delta, 4.0, rng), delta)
    np.testing.assert_array_equal(flip_labels(np.array([0, 1, 9]), 10), [9, 8, 0])
    chosen = byzantine_clients(7, 100, 0.3)
    assert len(chosen) == 30 and len(set(chosen)) == 30
    np.testing.assert_array_equal(chosen, byzantine_clients(7, 100, 0.3))
    assert len(byzantine_clients(7, 100, 0.0)) == 0


ATTACKED = [  # clients of equal size: 30% of the clients are 30% of the weight
    "env=fashion_mnist",
    "env.partition=iid",
    "env.train_subset=6000",
    "protocol.rounds=8",
    "protocol.eval_every=8",
    "protocol.clients_per_round=20",
    "protocol.byzantine_fraction=0.3",
    "protocol.attack=sign_flip",
    "progress=false",
]


def test_sign_flip_attackers_break_the_mean_but_not_the_median(ray_session, tmp_path):
    mean = sim.run([*ATTACKED, "aggregator=mean", f"output_dir={tmp_path / 'mean'}"])
    median = sim.run([*ATTACKED, "aggregator=median", f"output_dir={tmp_path / 'median'}"])
    # 30 of the 100 clients attack; each round's record counts those in its cohort.
    assert all(0 < r["byzantine_clients"] < 20 for r in mean.history)
    assert [r["byzantine_clients"] for r in mean.history] == [
        r["byzantine_clients"] for r in median.history
    ]
    # The mean follows -4x the honest direction: its loss explodes; the median learns.
    assert mean.final["test_loss"] > 10 * median.final["test_loss"]
    assert mean.final["test_accuracy"] < 0.3 < median.final["test_accuracy"]
