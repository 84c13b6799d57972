"""SpacTor's corruption and objective: the replaced-token labels mark exactly the replaced
positions, the generator masks only text tokens, and the loss switches to SC at tau."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.pretraining.spactor import (
    MaskedLM,
    SpacTor,
    hybrid_loss,
    loss_weights,
    mask_for_generator,
    replace_tokens,
    rtd_labels,
    sample,
)
from algorithms.pretraining.span_corruption import SpanCorruption
from models.t5 import T5
from sim.training.span_corruption import Vocabulary, corrupt

SENTINEL, EOS = 1000, 999


def test_rtd_labels_mark_exactly_the_replaced_positions():
    rng = np.random.default_rng(0)
    for _ in range(200):
        inputs, _ = corrupt(rng.integers(0, 50, 120), 0.15, 3.0, SENTINEL, EOS, rng)
        mask = mask_for_generator(inputs, 0.3, SENTINEL, EOS, rng)
        samples = rng.integers(0, 50, mask.sum())  # a small vocabulary: some samples are right
        replaced = replace_tokens(inputs, mask, samples)
        labels = rtd_labels(inputs, replaced)
        assert labels.dtype == bool
        np.testing.assert_array_equal(labels, mask & (samples_at(mask, samples) != inputs))
        assert not labels[(inputs >= SENTINEL) | (inputs == EOS)].any()
        np.testing.assert_array_equal(replaced[~mask], inputs[~mask])
        # the same functions on tensors, as SpacTor.loss calls them
        as_torch = replace_tokens(*map(torch.from_numpy, (inputs, mask, samples)))
        np.testing.assert_array_equal(as_torch.numpy(), replaced)
        torch_labels = rtd_labels(torch.from_numpy(inputs), as_torch).numpy()
        np.testing.assert_array_equal(torch_labels, labels)


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


# The hybrid objective on a model: what trains when, and what the SC stage keeps.

SPEC = T5(layers=1, decoder_layers=1, width=32, heads=2, context=40)
VOCAB = Vocabulary(text=60, sentinels=8)


def batch_of(objective, step, steps=10, seed=0):
    rows = np.random.default_rng(1).integers(1, 60, (4, objective.lengths(32)[0]))
    arrays = objective.batch(rows, VOCAB, step, steps, np.random.default_rng(seed))
    return arrays, {k: torch.from_numpy(v) for k, v in arrays.items()}


def test_the_hybrid_keeps_span_corruptions_examples_and_adds_the_generators():
    spactor, plain = SpacTor(tau=5), SpanCorruption()
    for step in (0, 7):
        hybrid, _ = batch_of(spactor, step)
        sc, _ = batch_of(plain, step)
        for key in ("inputs", "targets", "decoder_inputs"):
            np.testing.assert_array_equal(hybrid[key], sc[key])
        assert ("mask" in hybrid) == (step < 5)
    hybrid, _ = batch_of(spactor, 0)
    np.testing.assert_array_equal(hybrid["generator_inputs"] == VOCAB.mask, hybrid["mask"])
    assert (hybrid["inputs"][hybrid["mask"]] < VOCAB.first_sentinel).all()


def test_before_tau_every_part_trains_and_after_it_the_loss_is_span_corruption():
    torch.manual_seed(0)
    objective = SpacTor(tau=5)
    model, auxiliary = SPEC.build(VOCAB.size), objective.auxiliary(SPEC, VOCAB)
    _, early = batch_of(objective, 2)
    loss, parts = objective.loss(model, auxiliary, early, 2, 10)
    loss.backward()
    assert set(parts) == {"sc_loss", "rtd_loss", "mlm_loss", "replaced_fraction", "rtd_accuracy"}
    expected = parts["sc_loss"] + 50 * parts["rtd_loss"] + parts["mlm_loss"]
    torch.testing.assert_close(loss.detach(), expected)
    assert 0 < parts["replaced_fraction"] < 0.2  # most samples of an untrained generator differ
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in auxiliary.parameters())
    model.zero_grad(), auxiliary.zero_grad(set_to_none=True)
    _, late = batch_of(objective, 5)
    loss, parts = objective.loss(model, auxiliary, late, 5, 10)
    plain, _ = SpanCorruption().loss(model, None, late, 5, 10)
    assert set(parts) == {"sc_loss"} and torch.equal(loss, plain)
    loss.backward()
    assert all(p.grad is None for p in auxiliary.parameters())


def test_the_generator_predicts_text_ids_and_samples_by_the_cdf():
    generator = MaskedLM(VOCAB, 40, layers=1, width=8, heads=1)
    at = torch.zeros(2, 10, dtype=torch.bool)
    at[0, 3] = at[1, 7] = True
    assert generator(torch.randint(0, VOCAB.size, (2, 10)), at).shape == (2, VOCAB.text)
    certain = torch.full((3, 5), -1e9)
    certain[torch.arange(3), torch.tensor([4, 0, 2])] = 0.0
    assert sample(certain, torch.tensor([0.0, 0.5, 0.999])).tolist() == [4, 0, 2]
    uniform = torch.zeros(4, 5)  # probabilities 0.2 each: u in [0.2 k, 0.2 (k + 1)) gives k
    assert sample(uniform, torch.tensor([0.05, 0.25, 0.65, 0.95])).tolist() == [0, 1, 3, 4]


def test_flops_of_the_hybrid_stage_add_the_generator_and_the_head():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    objective = SpacTor(tau=5, generator_scale=0.5)
    raw, inputs, targets, spans = objective.lengths(32)
    sc = 3 * SPEC.forward_flops(VOCAB.size, inputs, targets)
    assert objective.step_flops(SPEC, VOCAB, 32, 5, 10) == sc
    masked = round(0.15 * (inputs - spans - 1))
    generator = objective.auxiliary(SPEC, VOCAB)["generator"]
    at = torch.zeros(1, inputs, dtype=torch.bool)
    at[0, :masked] = True
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        generator(torch.randint(0, VOCAB.size, (1, inputs)), at)
    head = 2 * SPEC.width * inputs
    hybrid = objective.step_flops(SPEC, VOCAB, 32, 4, 10)
    assert hybrid == sc + 3 * (counter.get_total_flops() + head)


def test_each_part_of_the_loss_is_the_same_on_the_whole_batch_and_averaged_over_halves():
    # what DDP averages: two workers' shares give the whole batch's loss, the MLM term included
    # (its masked positions differ per row: each share divides by the batch's mean count)
    torch.manual_seed(0)
    objective = SpacTor(tau=5)
    model, auxiliary = SPEC.build(VOCAB.size), objective.auxiliary(SPEC, VOCAB)
    rows = np.random.default_rng(1).integers(1, 60, (4, objective.lengths(32)[0]))
    rows[0, ::2] = VOCAB.eos  # document edges: fewer text tokens to mask in the first row
    arrays = objective.batch(rows, VOCAB, 0, 10, np.random.default_rng(0))
    assert len(set(arrays["mask"].sum(1).tolist())) > 1
    whole = {k: torch.from_numpy(v) for k, v in arrays.items()}
    _, parts = objective.loss(model, auxiliary, whole, 0, 10)
    halves = [
        objective.loss(model, auxiliary, {k: v[rows] for k, v in whole.items()}, 0, 10)[1]
        for rows in (slice(0, 2), slice(2, 4))
    ]
    for name in ("sc_loss", "rtd_loss", "mlm_loss", "replaced_fraction"):
        torch.testing.assert_close((halves[0][name] + halves[1][name]) / 2, parts[name])
