"""IWeS: its probabilities and weights on hand-computed model outputs, the one-at-a-time
sampling, and the learner it needs: per-example weights in the loss, an ensemble of models."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from algorithms.active.iwes import (
    IWeS,
    disagreement_probability,
    entropy_probability,
    importance_sample,
    importance_weights,
)
from models.learner import EnsembleLearner, MLPLearner
from sim.interfaces.active import LearnerOutputs, WeightedSelection
from sim.protocols.active.protocol import ActiveState
from sim.training.learner import expose
from sim.training.model import ClientData, ClientModel
from sim.training.sgd import SGD, train_epochs


def test_disagreement_probability_by_hand():
    f = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75], [0.5, 0.5]])
    g = np.array([[0.5, 0.5], [0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
    # row 2: |0.25 log2 0.25 - 0.75 log2 0.75| + |0.75 log2 0.75 - 0.25 log2 0.25|
    #      = 2 |-0.5 + 0.311278| = 0.377444
    expected = [0.0, 1.0, 2 * abs(-0.5 - 0.75 * np.log2(0.75)), 1.0]
    np.testing.assert_allclose(disagreement_probability(f, g), expected, rtol=1e-12)


def test_entropy_probability_by_hand():
    f = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(entropy_probability(f), [0.5, 1.0, 0.0], atol=1e-12)


def test_importance_sample_takes_each_point_at_its_rate():
    # a batch of 1 from p = (0.2, 0.8): a pass visits (0, 1) or (1, 0), each with chance 1/2,
    # and a pass that takes nothing is repeated, so P(0) = take0 / (take0 + take1)
    p = np.array([0.2, 0.8])
    rng = np.random.default_rng(0)
    picks = [importance_sample(p, np.arange(2), 1, rng)[0] for _ in range(20000)]
    # one pass: visit order (0, 1) or (1, 0), each 1/2; a pass that takes nothing repeats
    take0 = 0.5 * 0.2 + 0.5 * (1 - 0.8) * 0.2
    take1 = 0.5 * (1 - 0.2) * 0.8 + 0.5 * 0.8
    assert abs(np.mean(np.array(picks) == 0) - take0 / (take0 + take1)) < 0.01
    taken = importance_sample(np.full(10, 0.3), np.arange(10), 10, rng)
    assert sorted(taken) == list(range(10))  # passes repeat until the batch is full
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        importance_sample(np.array([0.5, 1.5]), np.arange(2), 1, rng)


def passes(p: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Algorithm 1's sampling as written: passes in a fresh random order over the points not
    yet taken, each taken with its probability, until ``k`` are taken (``p > 0``)."""
    remaining, taken = list(range(len(p))), []
    while len(taken) < k:
        for i in rng.permutation(remaining):
            if len(taken) < k and rng.random() < p[i]:
                taken.append(int(i))
        remaining = [i for i in remaining if i not in taken]
    return taken


def test_the_closed_form_draws_batches_as_the_passes_do():
    p, k, n = np.array([0.05, 0.3, 0.6, 0.9]), 2, 20000
    rng = np.random.default_rng(0)
    ours = Counter(tuple(importance_sample(p, np.arange(4), k, rng)) for _ in range(n))
    loop = Counter(tuple(passes(p, k, rng)) for _ in range(n))
    for batch in set(ours) | set(loop):  # each ordered batch's frequency, within 4 std
        a, b = ours[batch] / n, loop[batch] / n
        assert abs(a - b) < 4 * np.sqrt(max(a, b, 1 / n) / n), (batch, a, b)


def test_floor_zero_never_leaves_a_batch_unfilled():
    """The paper's probabilities (floor 0): points of p = 0 are never taken while points of
    p > 0 remain; a batch they cannot fill is filled from the rest, weighing 1. Tiny p costs
    no more than large."""
    p = np.array([0.0, 1e-300, 0.0, 0.5, 0.0, 0.0])
    rng = np.random.default_rng(0)
    for _ in range(200):
        taken = importance_sample(p, np.arange(6), 4, rng)
        assert len(set(taken.tolist())) == 4 and set(taken[:2].tolist()) == {1, 3}
    members = np.repeat(np.array([[0.5, 0.5]] * 5 + [[1.0, 0.0]], np.float32)[:, None], 2, 1)
    members[5, 1] = [0.5, 0.5]  # only point 5: p = 1; the rest p = 0
    outputs = LearnerOutputs(members.mean(axis=1), np.zeros((6, 1), np.float32), members)
    chosen = IWeS(floor=0.0, weight_cap=None).select(
        outputs, np.zeros(6, bool), np.full(6, -1), 3, np.random.default_rng(1)
    )
    assert chosen.indices[0] == 5 and len(set(chosen.indices.tolist())) == 3
    np.testing.assert_array_equal(chosen.weights, [1.0, 1.0, 1.0])


def test_weight_cap_none_and_one():
    p = np.array([0.001, 0.5, 1.0])
    np.testing.assert_allclose(importance_weights(p, None), [1000.0, 2.0, 1.0])
    np.testing.assert_array_equal(importance_weights(p, 1.0), [1.0, 1.0, 1.0])
    # no cap: a vanishing probability weighs at most 1e12 (finite in the float32 loss)
    np.testing.assert_array_equal(importance_weights(np.array([1e-39, 0.0]), None), [1e12, 1.0])
    # weights all 1 (weight_cap=1): the labels are kept without weights, so the learner
    # trains unweighted, bit for bit; a later weighted batch gives the earlier ones weight 1
    state = ActiveState(np.zeros(0, np.int64), np.zeros(0, np.int64))
    state.extend(np.array([3, 4]), np.array([0, 1]), importance_weights(p[:2], 1.0))
    assert state.weights is None
    state.extend(np.array([5]), np.array([1]), np.array([2.5]))
    np.testing.assert_array_equal(state.weights, [1.0, 1.0, 2.5])


def test_iwes_weights_are_capped_inverse_probabilities():
    members = np.array(
        [
            [[0.5, 0.5], [0.5, 0.5]],  # p = 0 -> floor 0.01 -> weight min(100, cap 10)
            [[1.0, 0.0], [0.5, 0.5]],  # p = 1 -> weight 1
            [[0.25, 0.75], [0.75, 0.25]],  # p = 0.377444 -> weight 2.64939
        ],
        np.float32,
    )
    outputs = LearnerOutputs(members.mean(axis=1), np.zeros((3, 1), np.float32), members)
    labeled = np.zeros(3, bool)
    selection = IWeS().select(outputs, labeled, np.full(3, -1), 3, np.random.default_rng(0))
    assert isinstance(selection, WeightedSelection)
    by_index = dict(zip(selection.indices.tolist(), selection.weights.tolist(), strict=True))
    p2 = 2 * abs(-0.5 - 0.75 * np.log2(0.75))
    assert by_index[0] == 10.0 and by_index[1] == 1.0
    assert by_index[2] == pytest.approx(1 / p2, rel=1e-6)
    entropy = IWeS(variant="entropy", weight_cap=50.0)
    chosen = entropy.select(outputs, labeled, np.full(3, -1), 1, np.random.default_rng(1))
    p = np.maximum(entropy_probability(outputs.probabilities[chosen.indices]), 0.01)
    np.testing.assert_allclose(chosen.weights, np.minimum(1 / p, 50.0), rtol=1e-6)


def test_iwes_needs_two_models_for_disagreement():
    assert IWeS().models_needed == 2 and IWeS(variant="entropy").models_needed == 1
    one = LearnerOutputs(np.full((2, 2), 0.5, np.float32), np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="two models"):
        IWeS().probabilities(one)
    with pytest.raises(ValueError, match="variant"):
        IWeS(variant="margin")


def test_weighted_loss_is_the_mean_of_weight_times_loss():
    # one full-batch SGD step from zero weights: the gradient of mean(w * CE) by hand
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1])
    w = torch.tensor([2.0, 0.5, 1.0])
    model = ClientModel(torch.nn.Linear(2, 2, bias=False))
    model.set_flat(np.zeros(4, np.float32))
    train_epochs(
        model,
        ClientData(x, y, w),
        SGD(model.module.parameters(), lr=1.0),
        epochs=1,
        batch_size=3,
        rng=np.random.default_rng(0),
    )
    # at zero weights p = (1/2, 1/2): dCE/dlogits = p - onehot; grad W = mean_i w_i (p - e_i) x_i^T
    residual = np.full((3, 2), 0.5) - np.eye(2)[y.numpy()]
    grad = (w.numpy()[:, None, None] * residual[:, :, None] * x.numpy()[:, None, :]).mean(axis=0)
    np.testing.assert_allclose(model.module.weight.detach().numpy(), -grad, rtol=1e-6)


def test_unit_weights_give_the_unweighted_fit():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype(np.float32), rng.integers(0, 2, size=40)
    learner = MLPLearner(width=8, depth=1, epochs=3, batch_size=8)
    plain, _ = learner.fit(x, y, 2, np.random.default_rng(1), 5)
    ones, _ = learner.fit(x, y, 2, np.random.default_rng(1), 5, weights=np.ones(40))
    np.testing.assert_allclose(plain.get_flat(), ones.get_flat(), rtol=1e-6, atol=1e-7)


def test_ensemble_of_one_is_the_base_learner_and_two_differ():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype(np.float32), rng.integers(0, 3, size=40)
    fields = dict(width=8, depth=1, epochs=2, batch_size=8)
    single, _ = MLPLearner(**fields).fit(x, y, 3, np.random.default_rng(1), 5)
    one, _ = EnsembleLearner(**fields, size=1).fit(x, y, 3, np.random.default_rng(1), 5)
    np.testing.assert_array_equal(one.get_flat(), single.get_flat())
    two, _ = EnsembleLearner(**fields, size=2).fit(x, y, 3, np.random.default_rng(1), 5)
    first, second = np.split(two.get_flat(), 2)
    np.testing.assert_array_equal(first, single.get_flat())
    assert not np.allclose(first, second)
    outputs = expose(two, x)
    assert outputs.members.shape == (40, 2, 3)
    np.testing.assert_allclose(outputs.probabilities, outputs.members.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(outputs.members[:, 0], expose(single, x).probabilities, rtol=1e-6)
    assert expose(single, x).members is None


def test_the_entropy_variant_scores_the_ensemble_mean_or_one_model():
    members = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]], np.float32)
    outputs = LearnerOutputs(members.mean(axis=1), np.zeros((2, 1), np.float32), members)
    mean = IWeS(variant="entropy", floor=0.0).probabilities(outputs)
    first = IWeS(variant="entropy", floor=0.0, entropy_model="first").probabilities(outputs)
    np.testing.assert_allclose(mean, [1.0, 1.0])  # the mean of two certain, opposite models
    np.testing.assert_allclose(first, [0.0, 1.0])  # the first model alone is certain
    with pytest.raises(ValueError, match="entropy_model"):
        IWeS(variant="entropy", entropy_model="last")
