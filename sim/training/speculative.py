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

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


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


@dataclass
class DecodeStats:
    """What a decoding loop did: target and draft forward calls, tokens produced, and the
    draft tokens proposed and accepted."""

    target_calls: int = 0
    draft_calls: int = 0
    tokens: int = 0
    proposed: int = 0
    accepted: int = 0

    @property
    def block_efficiency(self) -> float:
        """Mean tokens per target call (Leviathan et al.'s wall-time-free speed-up measure)."""
        return self.tokens / max(self.target_calls, 1)


def distribution(logits: torch.Tensor, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` as float64 numpy; ``temperature`` 0: the logits'
    softmax (greedy decoding only looks at its argmax)."""
    return torch.softmax(logits.double() / (temperature or 1.0), dim=-1).cpu().numpy()


def _pick(probabilities: np.ndarray, rng: np.random.Generator | None) -> int:
    if rng is None:
        return int(np.argmax(probabilities))
    return int(rng.choice(len(probabilities), p=probabilities / probabilities.sum()))


def check_decoding(temperature: float, rng: Any, gamma: int = 1) -> np.random.Generator | None:
    """The generator to draw with (None: greedy, ``temperature`` 0); refuses ``gamma < 1``, a
    negative temperature and sampling without a generator."""
    if gamma < 1:
        raise ValueError(f"gamma: the draft must propose at least 1 token (got {gamma})")
    if temperature < 0:
        raise ValueError(f"temperature: must be >= 0, 0 being greedy decoding (got {temperature})")
    if temperature > 0 and rng is None:
        raise ValueError("rng: sampling at a temperature > 0 needs a generator (0 is greedy)")
    return rng if temperature > 0 else None


@torch.no_grad()
def plain_generate(
    target: Any, prompt: list[int], new_tokens: int, temperature: float, rng: Any
) -> tuple[list[int], DecodeStats]:
    """Autoregressive decoding of ``new_tokens`` with a KV cache, sampling at ``temperature``
    from ``rng`` (``temperature`` 0: greedy)."""
    rng = check_decoding(temperature, rng)
    stats = DecodeStats()
    logits, cache = target.extend(torch.tensor([prompt]), None)
    out: list[int] = []
    while len(out) < new_tokens:
        token = _pick(distribution(logits[0, -1], temperature), rng)
        out.append(token)
        stats.target_calls += 1
        if len(out) < new_tokens:
            logits, cache = target.extend(torch.tensor([[token]]), cache)
    stats.tokens = len(out)
    return out, stats


def truncate(
    cache: list[tuple[torch.Tensor, torch.Tensor]], length: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A KV cache (per block: keys, values of shape (B, H, T, D)) cut to its first ``length``
    positions: what is kept of a model's cache after a rejected speculative proposal."""
    return [(k[:, :, :length], v[:, :, :length]) for k, v in cache]


@torch.no_grad()
def speculative_generate(
    target: Any,
    draft: Any,
    prompt: list[int],
    new_tokens: int,
    gamma: int,
    temperature: float,
    rng: Any,
) -> tuple[list[int], DecodeStats]:
    """Speculative decoding of ``new_tokens`` after ``prompt`` at ``temperature`` (0: greedy,
    ``rng`` unused), both models with KV caches (``extend(ids, cache)`` and ``truncate``, as
    ``models.gpt``).

    Each step: the draft proposes ``gamma`` tokens one at a time; the target scores the last
    emitted token and all proposals in one pass; :func:`verify` keeps a prefix and adds one
    token; both caches are cut back to the kept tokens.
    """
    rng = check_decoding(temperature, rng, gamma)
    stats = DecodeStats()
    # Invariant: both caches hold a prefix of prompt + out; *_todo is the rest of it.
    target_cache = draft_cache = None
    if len(prompt) > 1:
        _, target_cache = target.extend(torch.tensor([prompt[:-1]]), None)
        _, draft_cache = draft.extend(torch.tensor([prompt[:-1]]), None)
    target_todo, draft_todo = [prompt[-1]], [prompt[-1]]
    out: list[int] = []
    while len(out) < new_tokens:
        k = min(gamma, new_tokens - len(out))
        proposals, draft_dists = [], []
        feed = draft_todo
        for _ in range(k):
            logits, draft_cache = draft.extend(torch.tensor([feed]), draft_cache)
            stats.draft_calls += 1
            q = distribution(logits[0, -1], temperature)
            token = _pick(q, rng)
            proposals.append(token)
            draft_dists.append(q)
            feed = [token]
        kept_before = 0 if target_cache is None else target_cache[0][0].shape[2]
        logits, target_cache = target.extend(torch.tensor([target_todo + proposals]), target_cache)
        stats.target_calls += 1
        start = len(target_todo) - 1  # the logits after the last emitted token
        p = distribution(logits[0, start:], temperature)
        emitted = verify(p, np.array(draft_dists), np.array(proposals), rng)
        accepted = len(emitted) - 1  # the kept proposals; then a correction or a bonus token
        stats.proposed += k
        stats.accepted += accepted
        out.extend(emitted)
        kept = kept_before + len(target_todo) + accepted
        target_cache = truncate(target_cache, kept)
        target_todo = [emitted[-1]]
        draft_length = draft_cache[0][0].shape[2]
        draft_cache = truncate(draft_cache, min(draft_length, kept))
        draft_todo = ([proposals[-1]] if accepted == k else []) + [emitted[-1]]
    stats.tokens = len(out[:new_tokens])
    return out[:new_tokens], stats
