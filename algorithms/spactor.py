"""SpacTor's input corruption and its two-stage objective, as pure functions.

Ye et al., "SpacTor-T5: Pre-training T5 Models with Span Corruption and Replaced Token
Detection", arXiv 2401.13160. An example is first span-corrupted as in T5
(:mod:`algorithms.span_corruption`); then a fraction of the kept (non-sentinel) input tokens is
masked, a small generator (an MLM) predicts them, and its samples replace them (ELECTRA, Clark
et al., ICLR 2020). The encoder reads the result: the decoder still predicts the spans (SC), and a
head on the encoder marks each token original or replaced (RTD). A token the generator happened to
sample right counts as original, as in ELECTRA. For the first ``tau`` steps the loss is
``SC + lambda1 RTD + lambda2 MLM``; from step ``tau`` on it is SC alone (the two-stage curriculum).
"""

from __future__ import annotations

import numpy as np


def mask_for_generator(
    inputs: np.ndarray, rate: float, first_sentinel: int, eos: int, rng: np.random.Generator
) -> np.ndarray:
    """Positions (a bool mask over ``inputs``) the generator fills: ``round(rate * m)`` of the
    ``m`` text tokens (not sentinels, not eos), uniformly at random, at least one if any."""
    text = np.flatnonzero((inputs < first_sentinel) & (inputs != eos))
    count = min(max(int(round(rate * len(text))), 1), len(text))
    mask = np.zeros(len(inputs), bool)
    mask[rng.choice(text, count, replace=False)] = True
    return mask


def replace_tokens(inputs: np.ndarray, mask: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """``inputs`` with the generator's ``samples`` (one per masked position, in order) put at
    the ``mask`` positions."""
    out = inputs.copy()
    out[mask] = samples
    return out


def rtd_labels(original: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    """1 where the encoder's input token differs from the span-corrupted input it replaced, else
    0 (sentinels and correctly sampled tokens are originals)."""
    return (np.asarray(original) != np.asarray(corrupted)).astype(np.int64)


def loss_weights(step: int, tau: int, rtd_weight: float, mlm_weight: float):
    """``(SC, RTD, MLM)`` weights of the loss at ``step`` (counted from 0): ``(1, lambda1,
    lambda2)`` before ``tau``, ``(1, 0, 0)`` from ``tau`` on. ``tau`` = the total steps is the
    hybrid without the switch; ``tau`` = 0 is plain span corruption."""
    if step < 0 or tau < 0:
        raise ValueError(f"step and tau must be >= 0 (got {step}, {tau})")
    return (1.0, rtd_weight, mlm_weight) if step < tau else (1.0, 0.0, 0.0)


def hybrid_loss(
    sc: float, rtd: float, mlm: float, step: int, tau: int, rtd_weight: float, mlm_weight: float
) -> float:
    """``SC + lambda1 RTD + lambda2 MLM`` before ``tau``, ``SC`` after (works on tensors too)."""
    w_sc, w_rtd, w_mlm = loss_weights(step, tau, rtd_weight, mlm_weight)
    return w_sc * sc + w_rtd * rtd + w_mlm * mlm
