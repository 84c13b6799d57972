"""T5 span corruption: noise density and span lengths over many draws, fixed-size inputs and
targets, and the sentinel round trip."""

from __future__ import annotations

import numpy as np
import pytest

from sim.training.span_corruption import (
    corrupt,
    input_and_target_lengths,
    random_segmentation,
    random_spans_noise_mask,
    uncorrupt,
)

SENTINEL, EOS = 1000, 999  # text ids are < 999


def runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def test_noise_density_and_mean_span_length_over_many_draws():
    rng = np.random.default_rng(0)
    masks = [random_spans_noise_mask(512, 0.15, 3.0, rng) for _ in range(2000)]
    # T5's rounding: round(512 * 0.15) = 77 noise tokens in round(77 / 3) = 26 spans, every draw
    assert all(m.sum() == 77 and len(runs(m)) == 26 and not m[0] for m in masks)
    spans = np.concatenate([runs(m) for m in masks])
    assert spans.mean() == pytest.approx(77 / 26)
    # the spans are placed uniformly: every position away from the ends is noise about 15%
    # (as in T5, a mask starts with kept tokens and ends with noise)
    rate = np.mean(masks, axis=0)
    middle = rate[50:-50]
    assert abs(middle.mean() - 77 / 512) < 0.005 and np.abs(middle - 77 / 512).max() < 0.04
    assert rate[0] == 0 and rate[-1] == 1
    # span lengths of a uniform segmentation of 77 into 26: P(length 1) = C(75,24)/C(76,25)
    assert np.mean(spans == 1) == pytest.approx(25 / 76, abs=0.01)


def test_random_segmentation_sums_and_is_positive():
    rng = np.random.default_rng(1)
    for items, segments in [(10, 1), (10, 10), (77, 26)]:
        lengths = random_segmentation(items, segments, rng)
        assert lengths.sum() == items and len(lengths) == segments and lengths.min() >= 1


def test_t5_lengths_give_fixed_size_inputs_and_targets():
    tokens, targets = input_and_target_lengths(512, 0.15, 3.0)
    assert (tokens, targets) == (568, 114)  # the reference's values for T5's 512-token inputs
    rng = np.random.default_rng(2)
    for _ in range(50):
        inputs, out = corrupt(rng.integers(0, 999, tokens), 0.15, 3.0, SENTINEL, EOS, rng)
        assert (len(inputs), len(out)) == (512, 114)


@pytest.mark.parametrize("length", [2, 3, 17, 568])
def test_inputs_and_targets_reconstruct_the_original(length):
    rng = np.random.default_rng(length)
    for _ in range(100):
        tokens = rng.integers(0, 1000, length)  # eos (999) inside the text too: a document edge
        inputs, targets = corrupt(tokens, 0.15, 3.0, SENTINEL, EOS, rng)
        np.testing.assert_array_equal(uncorrupt(inputs, targets, SENTINEL, EOS), tokens)
        sentinels = inputs[inputs >= SENTINEL]
        np.testing.assert_array_equal(sentinels, SENTINEL + np.arange(len(sentinels)))
        np.testing.assert_array_equal(targets[targets >= SENTINEL], sentinels)
        assert inputs[-1] == targets[-1] == EOS


def test_by_hand():
    # T5's masks start with kept tokens and end with noise: noise at 2-3 and 6-7 gives
    # inputs 0 1 <0> 4 5 <1> and targets <0> 2 3 <1> 6 7 (before eos)
    tokens = np.arange(8)
    noise = np.array([0, 0, 1, 1, 0, 0, 1, 1], bool)
    from sim.training.span_corruption import sentinel_spans

    np.testing.assert_array_equal(sentinel_spans(tokens, noise, SENTINEL), [0, 1, 1000, 4, 5, 1001])
    np.testing.assert_array_equal(
        sentinel_spans(tokens, ~noise, SENTINEL), [1000, 2, 3, 1001, 6, 7]
    )
