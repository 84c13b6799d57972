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

Lossy speculative decoding (Leviathan et al., Appendix A.5; DistillSpec's lenience, Zhou et al.
2024): a lenience ``l`` in (0, 1] multiplies ``q`` by ``l`` in Algorithm 1: accept ``x`` with
probability ``min(1, p(x) / (l q(x)))``, so ``alpha = sum_x min(p(x) / l, q(x))`` and no token
is drawn with probability above ``p(x) / l``; a rejected position is redrawn from
``norm(max(0, p - l q))`` (Algorithm 1 with ``l q`` for ``q``: our reading, the appendix does not
restate it). Greedy: accept ``x`` while ``p(x) >= l max(p)`` (the appendix prints ``<=``, which
at ``l = 1`` would accept every token). ``l = 1`` is the lossless algorithm, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``TVD(p, q) = 1/2 sum_x |p(x) - q(x)|`` over the last axis."""
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(axis=-1)


def check_lenience(lenience: float) -> None:
    """Refuse a lenience outside (0, 1]."""
    if not 0 < lenience <= 1:
        raise ValueError(f"lenience: must be in (0, 1], 1 being lossless (got {lenience})")


def acceptance_rate(p: np.ndarray, q: np.ndarray, lenience: float = 1.0) -> np.ndarray:
    """``alpha = sum_x min(p(x) / l, q(x))`` (``1 - TVD(p, q)`` at ``l = 1``): the chance a draft
    token is accepted."""
    check_lenience(lenience)
    return np.minimum(np.asarray(p) / lenience, q).sum(axis=-1)


def residual(p: np.ndarray, q: np.ndarray, lenience: float = 1.0) -> np.ndarray:
    """``norm(max(0, p - l q))``, the distribution a rejected position is redrawn from (``p``
    where ``p <= l q`` everywhere: then no rejection can happen)."""
    excess = np.maximum(np.asarray(p, np.float64) - lenience * np.asarray(q), 0.0)
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
    target: np.ndarray,
    draft: np.ndarray | None,
    proposed: np.ndarray,
    rng: np.random.Generator | None,
    lenience: float = 1.0,
) -> list[int]:
    """One speculative step's output tokens.

    ``target``: (gamma + 1, V) target distributions at the ``gamma`` proposed positions and the
    one after; ``draft``: (gamma, V) the draft's distributions the ``proposed`` tokens were drawn
    from. ``rng=None`` is greedy decoding (``draft`` unused: accept while the proposal is the
    target's argmax, or with ``lenience`` < 1 has ``p(x) >= l max(p)``, then the target's
    argmax). Returns 1 to ``gamma + 1`` tokens.
    """
    if rng is None:
        with np.errstate(divide="ignore"):
            return greedy_verify(np.log(target), proposed, lenience)
    assert draft is not None
    gamma = len(proposed)
    out: list[int] = []
    for i in range(gamma):
        x = int(proposed[i])
        q = lenience * draft[i, x]
        accept = min(1.0, target[i, x] / q) if q > 0 else 0.0
        if rng.random() < accept:
            out.append(x)
            continue
        corrected = residual(target[i], draft[i], lenience)
        out.append(int(rng.choice(len(corrected), p=corrected / corrected.sum())))
        return out
    out.append(int(rng.choice(len(target[gamma]), p=target[gamma])))
    return out


def greedy_verify(logits: np.ndarray, proposed: np.ndarray, lenience: float = 1.0) -> list[int]:
    """:func:`verify` for greedy decoding, from the target's ``logits`` (gamma + 1, V) (any
    shift per row: log-probabilities will do): keep the proposals while each is the argmax, or
    with ``lenience`` < 1 has ``p(x) / max(p) = exp(logit(x) - max logit) >= l``; then the
    target's argmax."""
    out: list[int] = []
    for i, x in enumerate(map(int, proposed)):
        best = int(np.argmax(logits[i]))
        if x == best or (lenience < 1 and np.exp(logits[i, x] - logits[i, best]) >= lenience):
            out.append(x)
            continue
        out.append(best)
        return out
    out.append(int(np.argmax(logits[len(proposed)])))
    return out


def first_token_distribution(
    target: np.ndarray, draft: np.ndarray, lenience: float = 1.0
) -> np.ndarray:
    """The exact distribution of a speculative step's first output token, by enumerating its
    two ways: the draft proposes ``x`` and it is accepted, or any proposal is rejected and ``x``
    is redrawn from the residual. Equals ``target[0]`` at ``lenience`` 1 (lossless); below, no
    token exceeds ``target[0] / lenience``."""
    p, q = np.asarray(target[0], np.float64), np.asarray(draft[0], np.float64)
    lq = lenience * q
    accepted = q * np.minimum(1.0, np.divide(p, lq, out=np.zeros_like(p), where=lq > 0))
    rejected = 1.0 - accepted.sum()
    return accepted + rejected * residual(p, q, lenience)


def distributions_along(
    target: Any, draft: Any, tokens: list[int], prompt: int, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Both models' next-token distributions at ``temperature`` (0: their softmaxes) at the
    positions of ``tokens`` after the first ``prompt``: one forward pass each."""
    ids = token_ids(target, tokens[:-1])
    with torch.no_grad():
        p = distribution(target(ids)[0, prompt - 1 :], temperature)
        q = distribution(draft(ids)[0, prompt - 1 :], temperature)
    return p, q


def position_acceptance(
    p: np.ndarray, q: np.ndarray, temperature: float, lenience: float = 1.0
) -> np.ndarray:
    """Per position, the chance the draft's token is accepted: ``sum_x min(p(x) / l, q(x))``
    when sampling (Leviathan et al., Definition 3.1 and Appendix A.5), or for greedy decoding
    (``temperature`` 0) 1 if the draft's argmax is the target's, or with ``l`` < 1 has
    ``p(x) >= l max(p)`` (as :func:`greedy_verify`)."""
    if temperature > 0:
        return acceptance_rate(p, q, lenience)
    check_lenience(lenience)
    proposed = q.argmax(-1)
    chosen = np.take_along_axis(p, proposed[:, None], -1)[:, 0]
    kept = (p.argmax(-1) == proposed) | ((lenience < 1) & (chosen >= lenience * p.max(-1)))
    return kept.astype(np.float64)


def exact_acceptance(
    target: Any,
    draft: Any,
    tokens: list[int],
    prompt: int,
    temperature: float,
    lenience: float = 1.0,
) -> list[float]:
    """:func:`position_acceptance` along ``tokens`` (after ``prompt`` tokens) when both models
    decode at ``temperature``."""
    p, q = distributions_along(target, draft, tokens, prompt, temperature)
    return position_acceptance(p, q, temperature, lenience).tolist()


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


def device_of(model: Any) -> torch.device:
    """Where ``model`` runs: its ``device`` (transformers, :class:`CausalLM`) or its first
    parameter's."""
    found = getattr(model, "device", None)
    return found if isinstance(found, torch.device) else next(model.parameters()).device


def token_ids(model: Any, tokens: list[int]) -> torch.Tensor:
    """``(1, len(tokens))`` ids on ``model``'s device."""
    return torch.tensor([tokens], device=device_of(model))


class CausalLM:
    """A transformers causal LM with the interface of ``models.gpt`` that decoding uses:
    ``model(ids)`` gives next-token logits at every position, ``extend(ids, cache)`` the logits of
    ``ids`` after a KV cache (a transformers ``Cache``; None: empty) and the extended cache (cut
    back with :func:`truncate`), ``vocab_size`` its output size, ``device`` where it runs."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.vocab_size = int(model.config.vocab_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits

    def extend(self, ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        out = self.model(input_ids=ids, cache=cache, use_cache=True)
        return out.logits, out.cache


def distribution(logits: torch.Tensor, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` as float64 numpy; ``temperature`` 0: the logits'
    softmax (greedy decoding only looks at its argmax)."""
    return torch.softmax(logits.double() / (temperature or 1.0), dim=-1).cpu().numpy()


def _draw(probabilities: np.ndarray, rng: np.random.Generator) -> int:
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
    from ``rng`` (``temperature`` 0: greedy, the logits' argmax)."""
    rng = check_decoding(temperature, rng)
    stats = DecodeStats()
    logits, cache = target.extend(token_ids(target, prompt), None)
    out: list[int] = []
    while len(out) < new_tokens:
        last = logits[0, -1]
        token = int(last.argmax()) if rng is None else _draw(distribution(last, temperature), rng)
        out.append(token)
        stats.target_calls += 1
        if len(out) < new_tokens:
            logits, cache = target.extend(token_ids(target, [token]), cache)
    stats.tokens = len(out)
    return out, stats


def cache_length(cache: Any) -> int:
    """Positions held by a KV cache: a list of per-block ``(keys, values)`` (B, H, T, D), as
    ``models.gpt``, or a transformers ``Cache``."""
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return int(cache[0][0].shape[2])


def truncate(cache: Any, length: int) -> Any:
    """A KV cache cut to its first ``length`` positions: what is kept of a model's cache after a
    rejected speculative proposal. A per-block list is sliced; a transformers ``Cache`` is
    cropped in place (``crop(-n)`` removes ``n`` positions in every version)."""
    if hasattr(cache, "crop"):
        surplus = cache_length(cache) - length
        if surplus > 0:
            cache.crop(-surplus)
        return cache
    return [(k[:, :, :length], v[:, :, :length]) for k, v in cache]


def check_vocabularies(target: Any, draft: Any) -> None:
    """Refuse a draft whose vocabulary is not the target's (speculative decoding compares their
    distributions token by token; ``vocab_size`` as ``models.gpt`` and :class:`CausalLM`)."""
    sizes = getattr(target, "vocab_size", None), getattr(draft, "vocab_size", None)
    if None not in sizes and sizes[0] != sizes[1]:
        raise ValueError(
            f"draft: its vocabulary of {sizes[1]} tokens is not the target's {sizes[0]}; a draft "
            "must use the target's tokenizer"
        )


@torch.no_grad()
def speculative_generate(
    target: Any,
    draft: Any,
    prompt: list[int],
    new_tokens: int,
    gamma: int,
    temperature: float,
    rng: Any,
    lenience: float = 1.0,
) -> tuple[list[int], DecodeStats]:
    """Speculative decoding of ``new_tokens`` after ``prompt`` at ``temperature`` (0: greedy,
    ``rng`` unused), both models with KV caches (``extend(ids, cache)`` as ``models.gpt``, cut
    back with :func:`truncate`); ``lenience`` < 1: the lossy variant (module docstring).

    Each step: the draft proposes ``gamma`` tokens one at a time; the target scores the last
    emitted token and all proposals in one pass; :func:`verify` keeps a prefix and adds one
    token; both caches are cut back to the kept tokens. Greedy decoding works on the logits
    (argmaxes, :func:`greedy_verify`): no distribution is built.
    """
    rng = check_decoding(temperature, rng, gamma)
    check_lenience(lenience)
    check_vocabularies(target, draft)
    stats = DecodeStats()
    # Invariant: both caches hold a prefix of prompt + out; *_todo is the rest of it.
    target_cache = draft_cache = None
    if len(prompt) > 1:
        _, target_cache = target.extend(token_ids(target, prompt[:-1]), None)
        _, draft_cache = draft.extend(token_ids(draft, prompt[:-1]), None)
    target_todo, draft_todo = [prompt[-1]], [prompt[-1]]
    out: list[int] = []
    while len(out) < new_tokens:
        k = min(gamma, new_tokens - len(out))
        proposals, draft_dists = [], []
        feed = draft_todo
        for _ in range(k):
            logits, draft_cache = draft.extend(token_ids(draft, feed), draft_cache)
            stats.draft_calls += 1
            if rng is None:
                token = int(logits[0, -1].argmax())
            else:
                q = distribution(logits[0, -1], temperature)
                token = _draw(q, rng)
                draft_dists.append(q)
            proposals.append(token)
            feed = [token]
        kept_before = 0 if target_cache is None else cache_length(target_cache)
        logits, target_cache = target.extend(
            token_ids(target, target_todo + proposals), target_cache
        )
        stats.target_calls += 1
        start = len(target_todo) - 1  # the logits after the last emitted token
        if rng is None:  # greedy: the logits decide, no distribution is built
            emitted = greedy_verify(
                logits[0, start:].float().cpu().numpy(), np.array(proposals), lenience
            )
        else:
            p = distribution(logits[0, start:], temperature)
            emitted = verify(p, np.array(draft_dists), np.array(proposals), rng, lenience)
        accepted = len(emitted) - 1  # the kept proposals; then a correction or a bonus token
        stats.proposed += k
        stats.accepted += accepted
        out.extend(emitted)
        kept = kept_before + len(target_todo) + accepted
        target_cache = truncate(target_cache, kept)
        target_todo = [emitted[-1]]
        draft_cache = truncate(draft_cache, min(cache_length(draft_cache), kept))
        draft_todo = ([proposals[-1]] if accepted == k else []) + [emitted[-1]]
    stats.tokens = len(out[:new_tokens])
    return out[:new_tokens], stats
