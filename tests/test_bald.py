"""BALD with MC dropout: the score by hand, the MC-dropout samples by hand on fixed masks, the
learner's dropout, and a run (its samples from the run's seed: the same numbers again)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.active.bald import BALD, bald_scores
from models.learner import MLPLearner
from sim.errors import CohortError
from sim.interfaces.active import LearnerOutputs
from sim.training.learner import expose
from sim.training.model import ClientModel
from tests.test_active import run


def test_bald_scores_by_hand():
    samples = np.array(
        [
            [[1.0, 0.0], [0.0, 1.0]],  # certain samples that disagree: ln 2 - 0
            [[0.5, 0.5], [0.5, 0.5]],  # uncertain samples that agree: ln 2 - ln 2
            [[0.9, 0.1], [0.5, 0.5]],
        ]
    )
    h = lambda p: -sum(q * np.log(q) for q in p if q > 0)  # noqa: E731
    third = h([0.7, 0.3]) - (h([0.9, 0.1]) + h([0.5, 0.5])) / 2
    np.testing.assert_allclose(bald_scores(samples), [np.log(2), 0.0, third], atol=1e-12)


def test_mc_dropout_samples_and_scores_by_hand_on_fixed_masks():
    """A 1-hidden-layer MLP of width 3, dropout 0.5, fixed weights; two samples whose masks
    are the rng's draws in order (sample, then row x unit): the forward pass in numpy."""
    learner = MLPLearner(width=3, depth=1, dropout=0.5)
    net = learner.build(2, 2)
    assert isinstance(net[2], torch.nn.Dropout)
    w1, b1 = np.array([[1.0, -1.0], [0.5, 2.0], [-1.0, 1.0]]), np.array([0.1, 0.0, 0.2])
    w2, b2 = np.array([[1.0, -2.0, 0.5], [-1.0, 1.0, 1.5]]), np.array([0.0, 0.3])
    with torch.no_grad():
        for layer, w, b in ((net[0], w1, b1), (net[3], w2, b2)):
            layer.weight.copy_(torch.tensor(w))
            layer.bias.copy_(torch.tensor(b))
    x = np.array([[1.0, 2.0], [-0.5, 0.3], [2.0, -1.0]], np.float32)
    outputs = expose(ClientModel(net), x, mc_samples=2, rng=np.random.default_rng(7))
    masks = np.random.default_rng(7)
    expected = []
    for _ in range(2):
        hidden = np.maximum(x @ w1.T + b1, 0) * (masks.random((3, 3)) >= 0.5) / 0.5
        logits = hidden @ w2.T + b2
        expected.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    expected = np.stack(expected, axis=1)
    np.testing.assert_allclose(outputs.samples, expected, rtol=1e-5)
    # the plain probabilities: dropout off
    plain = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2
    plain = np.exp(plain) / np.exp(plain).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(outputs.probabilities, plain, rtol=1e-5)
    scores = BALD(mc_samples=2).priority(outputs)
    np.testing.assert_allclose(-scores, bald_scores(expected), rtol=1e-5)


def test_bald_needs_samples_and_a_learner_with_dropout(ray_session, tmp_path):
    empty = LearnerOutputs(np.full((2, 2), 0.5, np.float32), np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="MC-dropout samples"):
        BALD().priority(empty)
    with pytest.raises(CohortError, match="learner.dropout: algorithm BALD samples"):
        run(tmp_path, "algorithm=bald")
    with pytest.raises(CohortError, match="algorithm.mc_samples: must be >= 2"):
        run(tmp_path, "algorithm=bald", "algorithm.mc_samples=1", "learner.dropout=0.1")


def test_a_bald_run_gives_the_same_numbers_again(ray_session, tmp_path):
    first = run(tmp_path, "algorithm=bald", "learner.dropout=0.2", name="a")
    again = run(tmp_path, "algorithm=bald", "learner.dropout=0.2", name="b")
    assert [r["labels"] for r in first.history] == [10, 20, 30]
    np.testing.assert_array_equal(first.params, again.params)
    assert first.history[-1]["test_accuracy"] == again.history[-1]["test_accuracy"]
