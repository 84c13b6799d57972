"""Speculative decoding is lossless: exactly by enumeration and by chi-square over many draws;
greedy equals the target's greedy; the acceptance rate is 1 - TVD; the KV cache is exact. The
lossy variant (lenience < 1): Leviathan et al.'s acceptance rate and bound, its output law by
chi-square, and lenience 1 is the lossless algorithm bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from models.gpt import GPT
from sim.training.speculative import (
    acceptance_rate,
    expected_speedup,
    expected_tokens_per_call,
    first_token_distribution,
    residual,
    total_variation,
    truncate,
    verify,
)

P = np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
Q = np.array([[0.2, 0.2, 0.5, 0.1], [0.4, 0.3, 0.2, 0.1]])


def test_acceptance_rate_is_one_minus_tvd_by_hand():
    # min(p, q) sums: 0.2 + 0.2 + 0.15 + 0.05 = 0.6; TVD = (0.3 + 0.1 + 0.35 + 0.05) / 2 = 0.4
    assert acceptance_rate(P[0], Q[0]) == pytest.approx(0.6)
    assert total_variation(P[0], Q[0]) == pytest.approx(0.4)
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(7))
        assert acceptance_rate(p, q) == pytest.approx(1 - total_variation(p, q))


def test_residual_by_hand():
    # p - q = (0.3, 0.1, -0.35, -0.05): positive part (0.3, 0.1, 0, 0) / 0.4
    np.testing.assert_allclose(residual(P[0], Q[0]), [0.75, 0.25, 0, 0])
    np.testing.assert_allclose(residual(P[2], P[2]), P[2])  # p == q: never used, still a law


def test_lossless_exactly_by_enumeration():
    np.testing.assert_allclose(first_token_distribution(P, Q), P[0], atol=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(5), size=2), rng.dirichlet(np.ones(5), size=1)
        np.testing.assert_allclose(first_token_distribution(p, q), p[0], atol=1e-12)


def test_lossless_by_chi_square_over_many_draws():
    # The first output token of a speculative step is distributed as p_0 whatever q proposes.
    rng = np.random.default_rng(2)
    draws = 20_000
    counts = np.zeros(4)
    for _ in range(draws):
        proposed = [rng.choice(4, p=Q[0]), rng.choice(4, p=Q[1])]
        counts[verify(P, Q, np.array(proposed), rng)[0]] += 1
    assert chisquare(counts, draws * P[0]).pvalue > 1e-3


def test_greedy_equals_the_targets_greedy():
    target = np.array([[0.1, 0.7, 0.2], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    draft = np.full((2, 3), 1 / 3)
    assert verify(target, draft, np.array([1, 0]), None) == [1, 0, 2]  # all accepted + bonus
    assert verify(target, draft, np.array([1, 2]), None) == [1, 0]  # the 2nd rejected: p's argmax
    assert verify(target, draft, np.array([2, 0]), None) == [1]


def test_expected_tokens_and_speedup_by_hand():
    assert expected_tokens_per_call(0.5, 3) == pytest.approx((1 - 0.5**4) / 0.5)  # 1.875
    assert expected_tokens_per_call(1.0, 3) == 4
    assert expected_speedup(0.5, 3, 0.1) == pytest.approx(1.875 / 1.3)


def test_kv_cache_gives_the_logits_of_a_full_forward_pass():
    torch.manual_seed(0)
    model = GPT(layers=2, width=32, heads=4, context=16).build(50).eval()
    ids = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        full = model(ids)
        logits, cache = model.extend(ids[:, :5], None)
        parts = [logits]
        for t in range(5, 9):  # one token at a time
            logits, cache = model.extend(ids[:, t : t + 1], cache)
            parts.append(logits)
        logits, cache = model.extend(ids[:, 9:], cache)  # a block of 3
        parts.append(logits)
        torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
        again, _ = model.extend(ids[:, 7:], truncate(cache, 7))  # after a rejection at 7
        torch.testing.assert_close(again, full[:, 7:], atol=1e-5, rtol=1e-5)


def test_divergences_by_hand_on_two_three_token_distributions():
    import math

    from sim.training.distill import divergence

    p, q = [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]
    logits = lambda d: torch.log(torch.tensor([d]))  # noqa: E731
    fkl = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))
    rkl = sum(b * math.log(b / a) for a, b in zip(p, q, strict=True))
    beta = 0.3
    m = [beta * a + (1 - beta) * b for a, b in zip(p, q, strict=True)]
    jsd = beta * sum(a * math.log(a / c) for a, c in zip(p, m, strict=True)) + (1 - beta) * sum(
        b * math.log(b / c) for b, c in zip(q, m, strict=True)
    )
    tvd = 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))  # 0.3
    for name, want in (("fkl", fkl), ("rkl", rkl), ("jsd", jsd), ("tvd", tvd)):
        got = divergence(name, logits(p), logits(q), beta)
        assert float(got) == pytest.approx(want, rel=1e-5), name
    assert tvd == pytest.approx(1 - float(acceptance_rate(np.array(p), np.array(q))))
    with pytest.raises(ValueError, match="divergence"):
        divergence("hellinger", logits(p), logits(q))


def test_greedy_speculative_decoding_equals_the_targets_greedy_decoding():
    from sim.training.speculative import plain_generate, speculative_generate

    torch.manual_seed(0)
    target = GPT(layers=2, width=32, heads=4, context=64).build(30).eval()
    torch.manual_seed(1)
    draft = GPT(layers=1, width=16, heads=2, context=64).build(30).eval()
    plain, _ = plain_generate(target, [1, 2, 3], 25, 0.0, None)
    for gamma in (1, 3, 5, 7):
        fast, stats = speculative_generate(target, draft, [1, 2, 3], 25, gamma, 0.0, None)
        assert fast == plain, gamma
        assert stats.tokens == 25 and stats.target_calls <= 25
    # a draft that is the target is always accepted: gamma + 1 tokens per target call
    _, stats = speculative_generate(target, target, [1, 2, 3], 20, 4, 1.0, np.random.default_rng(0))
    assert stats.accepted == stats.proposed and stats.block_efficiency == 5.0


def test_lenience_gives_leviathans_acceptance_rate_and_bound():
    # Appendix A.5: alpha = sum_x min(p(x) / l, q(x)); no token above p(x) / l
    p, q, lenience = P[0], Q[0], 0.5
    # min(1.0, .2) + min(.6, .2) + min(.3, .5) + min(.1, .1) = 0.2 + 0.2 + 0.3 + 0.1
    assert acceptance_rate(p, q, lenience) == pytest.approx(0.8)
    np.testing.assert_allclose(residual(p, q, lenience), [0.4 / 0.6, 0.2 / 0.6, 0, 0])
    rng = np.random.default_rng(3)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(6), size=2), rng.dirichlet(np.ones(6), size=1)
        for lenience in (0.9, 0.5, 0.1):
            law = first_token_distribution(p, q, lenience)
            assert law.sum() == pytest.approx(1.0)
            assert np.all(law <= p[0] / lenience + 1e-12)
            accepted = (q[0] * np.minimum(1, p[0] / (lenience * q[0]))).sum()
            assert accepted == pytest.approx(acceptance_rate(p[0], q[0], lenience))
            assert accepted >= acceptance_rate(p[0], q[0]) - 1e-12  # more lenient, more kept
        np.testing.assert_array_equal(first_token_distribution(p, q, 1.0),
                                      first_token_distribution(p, q))  # fmt: skip


def test_the_lossy_steps_draws_follow_its_law_by_chi_square():
    rng = np.random.default_rng(4)
    draws, lenience = 20_000, 0.4
    counts = np.zeros(4)
    for _ in range(draws):
        proposed = [rng.choice(4, p=Q[0]), rng.choice(4, p=Q[1])]
        counts[verify(P, Q, np.array(proposed), rng, lenience)[0]] += 1
    law = first_token_distribution(P, Q, lenience)
    assert chisquare(counts, draws * law).pvalue > 1e-3
    assert not np.allclose(law, P[0], atol=0.05)  # lossy: not the target's law


# Lossless speculative decoding's output before lenience existed (commit f9bb50d): the tiny
# target and draft below, prompt [1, 2, 3], 30 tokens, rng default_rng(5); per (temperature,
# gamma): the tokens, the accepted proposals and the target calls.
RECORDED = {
    (1.0, 1): ([24, 15, 8, 11, 11, 1, 29, 6, 28, 25, 15, 20, 16, 8, 1, 20, 7, 26, 0, 20, 15, 13,
                10, 24, 4, 20, 24, 7, 24, 15], 15, 16),
    (1.0, 4): ([24, 24, 15, 8, 1, 29, 19, 7, 12, 14, 1, 20, 26, 6, 26, 15, 13, 5, 9, 24, 24, 7, 9,
                23, 14, 2, 25, 11, 28, 12], 24, 7),
    (0.7, 1): ([24, 14, 8, 11, 11, 1, 29, 6, 28, 25, 15, 20, 16, 8, 1, 1, 26, 0, 21, 15, 12, 9,
                23, 4, 20, 24, 7, 23, 15, 7], 14, 16),
    (0.7, 4): ([24, 24, 15, 8, 1, 29, 19, 7, 12, 13, 3, 2, 21, 0, 14, 13, 4, 20, 13, 23, 6, 6, 0,
                27, 2, 25, 17, 6, 21, 20], 23, 8),
}  # fmt: skip


def algorithm_1(p: np.ndarray, q: np.ndarray, proposed: list[int], rng) -> list[int]:
    """Leviathan et al.'s Algorithm 1 as printed (lossless), drawing from ``rng`` in the same
    order as :func:`verify`: a uniform per proposal, then the correction or the bonus token."""
    out = []
    for i, x in enumerate(proposed):
        if rng.random() < min(1.0, p[i, x] / q[i, x]):
            out.append(x)
            continue
        excess = np.maximum(p[i] - q[i], 0)
        return [*out, int(rng.choice(len(excess), p=excess / excess.sum()))]
    return [*out, int(rng.choice(p.shape[1], p=p[-1]))]


def test_lenience_one_is_the_lossless_algorithm_bit_for_bit():
    from sim.training.speculative import plain_generate, speculative_generate

    # verify at lenience 1 draws what Algorithm 1 draws, case by case
    cases = np.random.default_rng(6)
    for _ in range(300):
        p, q = cases.dirichlet(np.ones(5), size=4), cases.dirichlet(np.ones(5), size=3)
        proposed = [int(cases.choice(5, p=row)) for row in q]
        seed = int(cases.integers(1 << 30))
        got = verify(p, q, np.array(proposed), np.random.default_rng(seed), 1.0)
        assert got == algorithm_1(p, q, proposed, np.random.default_rng(seed))
    # and speculative decoding at lenience 1 gives the lossless implementation's recorded output
    torch.manual_seed(0)
    target = GPT(layers=2, width=32, heads=4, context=64).build(30).eval()
    torch.manual_seed(1)
    draft = GPT(layers=1, width=16, heads=2, context=64).build(30).eval()
    for (temperature, gamma), (tokens, accepted, calls) in RECORDED.items():
        out, stats = speculative_generate(target, draft, [1, 2, 3], 30, gamma, temperature,
                                          np.random.default_rng(5), 1.0)  # fmt: skip
        assert (out, stats.accepted, stats.target_calls) == (tokens, accepted, calls)
    # greedy lenience: a draft token kept while p(x) >= l max(p), so a lenient run may leave
    # the target's greedy output, which lenience 1 never does
    plain, _ = plain_generate(target, [1, 2, 3], 30, 0.0, None)
    strict, _ = speculative_generate(target, draft, [1, 2, 3], 30, 3, 0.0, None, 1.0)
    lenient, stats = speculative_generate(target, draft, [1, 2, 3], 30, 3, 0.0, None, 0.05)
    assert strict == plain and lenient != plain
    target_probabilities = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    assert verify(target_probabilities, None, np.array([1]), None, 0.5) == [1, 2]  # 0.3 >= 0.25
    assert verify(target_probabilities, None, np.array([2]), None, 0.5) == [0]  # 0.2 < 0.25
    with pytest.raises(ValueError, match="lenience"):
        speculative_generate(target, draft, [1, 2], 5, 2, 1.0, np.random.default_rng(0), 0.0)
    with pytest.raises(ValueError, match="lenience"):
        acceptance_rate(P[0], Q[0], 1.5)


def test_a_draft_over_another_vocabulary_is_refused():
    from sim.training.speculative import speculative_generate

    target = GPT(layers=1, width=16, heads=2, context=32).build(30).eval()
    draft = GPT(layers=1, width=16, heads=2, context=32).build(31).eval()
    with pytest.raises(ValueError, match="vocabulary of 31 tokens is not the target's 30"):
        speculative_generate(target, draft, [1, 2], 5, 2, 0.0, None)
