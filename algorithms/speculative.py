"""Speculative decoding: a draft model proposes ``gamma`` tokens, the target checks them in one
forward pass, and the output is distributed exactly as the target's.

Leviathan, Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding", ICML 2023
(arXiv 2211.17192), Algorithm 1; Chen et al., "Accelerating Large Language Model Decoding with
Speculative Sampling", arXiv 2302.01318. With draft distributions ``q_i`` and target
distributions ``p_i`` at the proposed positions: accept the draft token ``x_i`` with probability
``min(1, p_i(x_i) / q_i(x_i))``; at the first rejection, draw from ``norm(max(0, p_i - q_i))`` and
stop; if all ``gamma`` are accepted, draw one more token from ``p_gamma``. Per position the
acceptance probability is ``alpha = sum_x min(p(x), q(x)) = 1 - TVD(p, q)``; with a constant
``alpha`` the expected tokens per target call are ``(1 - alpha^(gamma+1)) / (1 - alpha)`` and the
speed-up over plain decoding ``(1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1))``, ``c`` the
cost of a draft step over a target step (Leviathan et al., Theorem 3.8). Greedy decoding is the
limit of one-hot distributions: a draft token is accepted iff it is the target's argmax.
"""

from __future__ import annotations

import numpy as np


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``TVD(p, q) = 1/2 sum_x |p(x) - q(x)|`` over the last axis."""
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(axis=-1)


def acceptance_rate(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``alpha = sum_x min(p(x), q(x)) = 1 - TVD(p, q)``: the chance a draft token is accepted."""
    return np.minimum(p, q).sum(axis=-1)


def residual(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``norm(max(0, p - q))``, the distribution a rejected position is redrawn from (``p`` where
    ``p <= q`` everywhere, i.e. ``p == q``: then no rejection can happen)."""
    excess = np.maximum(np.asarray(p, np.float64) - q, 0.0)
    total = excess.sum(axis=-1, keepdims=True)
    return np.where(total > 0, excess / np.where(total > 0, total, 1.0), p)


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """``(1 - alpha^(gamma+1)) / (1 - alpha)``: tokens produced per target forward pass."""
    if alpha >= 1.0:
        return float(gamma + 1)
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def expected_speedup(alpha: float, gamma: int, cost_ratio: float) -> float:
    """Wall-clock speed-up over plain target decoding, ``c`` = draft step / target step."""
    return expected_tokens_per_call(alpha, gamma) / (gamma * cost_ratio + 1)


def verify(
    target: np.ndarray, draft: np.ndarray, proposed: np.ndarray, rng: np.random.Generator | None
) -> list[int]:
    """One speculative step's output tokens.

    ``target``: (gamma + 1, V) target distributions at the ``gamma`` proposed positions and the
    one after; ``draft``: (gamma, V) the draft's distributions the ``proposed`` tokens were drawn
    from. ``rng=None`` is greedy decoding (one-hot distributions: accept while the proposal is
    the target's argmax, then the target's argmax). Returns 1 to ``gamma + 1`` tokens.
    """
    gamma = len(proposed)
    out: list[int] = []
    for i in range(gamma):
        x = int(proposed[i])
        if rng is None:
            best = int(np.argmax(target[i]))
            out.append(best)
            if best != x:
                return out
            continue
        accept = min(1.0, target[i, x] / draft[i, x]) if draft[i, x] > 0 else 0.0
        if rng.random() < accept:
            out.append(x)
            continue
        corrected = residual(target[i], draft[i])
        out.append(int(rng.choice(len(corrected), p=corrected / corrected.sum())))
        return out
    last = target[gamma]
    out.append(int(np.argmax(last)) if rng is None else int(rng.choice(len(last), p=last)))
    return out


def first_token_distribution(target: np.ndarray, draft: np.ndarray) -> np.ndarray:
    """The exact distribution of a speculative step's first output token, by enumerating its
    two ways: the draft proposes ``x`` and it is accepted, or any proposal is rejected and ``x``
    is redrawn from the residual. Equals ``target[0]`` (the method is lossless)."""
    p, q = np.asarray(target[0], np.float64), np.asarray(draft[0], np.float64)
    accepted = q * np.minimum(1.0, np.divide(p, q, out=np.zeros_like(p), where=q > 0))
    rejected = 1.0 - accepted.sum()
    return accepted + rejected * residual(p, q)
