"""SpacTor's corruption and objective: the replaced-token labels mark exactly the replaced
positions, the generator masks only text tokens, and the loss switches to SC at tau."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.spactor import (
    hybrid_loss,
    loss_weights,
    mask_for_generator,
    replace_tokens,
    rtd_labels,
)
from algorithms.span_corruption import corrupt

SENTINEL, EOS = 1000, 999


def test_rtd_labels_mark_exactly_the_replaced_positions():
    rng = np.random.default_rng(0)
    for _ in range(200):
        inputs, _ = corrupt(rng.integers(0, 50, 120), 0.15, 3.0, SENTINEL, EOS, rng)
        mask = mask_for_generator(inputs, 0.3, SENTINEL, EOS, rng)
        samples = rng.integers(0, 50, mask.sum())  # a small vocabulary: some samples are right
        replaced = replace_tokens(inputs, mask, samples)
        labels = rtd_labels(inputs, replaced)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels == 1, mask & (samples_at(mask, samples) != inputs))
        assert not labels[(inputs >= SENTINEL) | (inputs == EOS)].any()
        np.testing.assert_array_equal(replaced[~mask], inputs[~mask])


def samples_at(mask: np.ndarray, samples: np.ndarray) -> np.ndarray:
    out = np.full(len(mask), -1)
    out[mask] = samples
    return out


def test_generator_masks_a_rate_of_the_text_tokens_only():
    inputs = np.array([5, 6, SENTINEL, 7, 8, 9, SENTINEL + 1, 10, 11, 12, EOS])
    rng = np.random.default_rng(1)
    seen = np.zeros(len(inputs))
    for _ in range(500):
        mask = mask_for_generator(inputs, 0.25, SENTINEL, EOS, rng)
        assert mask.sum() == 2  # round(0.25 * 8 text tokens)
        seen += mask
    assert not seen[[2, 6, 10]].any() and seen[[0, 1, 3, 4, 5, 7, 8, 9]].min() > 0


def test_loss_switches_to_span_corruption_at_tau():
    assert loss_weights(0, 3, 50.0, 1.0) == (1.0, 50.0, 1.0)
    assert loss_weights(2, 3, 50.0, 1.0) == (1.0, 50.0, 1.0)
    assert loss_weights(3, 3, 50.0, 1.0) == (1.0, 0.0, 0.0)
    assert hybrid_loss(2.0, 0.5, 3.0, 1, 3, 50.0, 1.0) == 2.0 + 25.0 + 3.0
    assert hybrid_loss(2.0, 0.5, 3.0, 3, 3, 50.0, 1.0) == 2.0
    assert loss_weights(0, 0, 50.0, 1.0) == (1.0, 0.0, 0.0)  # tau = 0: plain span corruption
    with pytest.raises(ValueError, match=">= 0"):
        loss_weights(-1, 3, 50.0, 1.0)
