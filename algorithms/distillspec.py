"""DistillSpec: distilling the draft model towards the target, for speculative decoding.

Zhou, Lyu, Rawat, Menon, Rostamizadeh, Kumar, Kagy, Agarwal, "DistillSpec: Improving Speculative
Decoding via Knowledge Distillation", ICLR 2024 (arXiv 2310.08461). The draft ``q`` is trained to
match the target ``p`` token by token under a divergence ``D(p || q)`` chosen per task, on data
from a chosen source (the fixed corpus, sequences the target generates, or sequences the draft
itself generates: on-policy). Since the acceptance rate of speculative decoding is
``1 - TVD(p, q)`` per position, TVD is the objective the speed-up asks for; the paper finds the
best divergence task-dependent and on-policy data to help. The divergences, per position, over
the vocabulary (``m = beta p + (1 - beta) q``):

- forward KL ``KL(p || q) = sum p (log p - log q)``
- reverse KL ``KL(q || p)``
- ``JSD[beta](p || q) = beta KL(p || m) + (1 - beta) KL(q || m)``
- ``TVD(p, q) = 1/2 sum |p - q|``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DIVERGENCES = ("fkl", "rkl", "jsd", "tvd")


def divergence(
    name: str, target_logits: torch.Tensor, draft_logits: torch.Tensor, beta: float = 0.5
) -> torch.Tensor:
    """``D(p || q)`` per position (the last axis is the vocabulary), from the target's and the
    draft's logits; differentiable in the draft's."""
    log_p = F.log_softmax(target_logits.float(), dim=-1)
    log_q = F.log_softmax(draft_logits.float(), dim=-1)
    p, q = log_p.exp(), log_q.exp()
    if name == "fkl":
        return (p * (log_p - log_q)).sum(-1)
    if name == "rkl":
        return (q * (log_q - log_p)).sum(-1)
    if name == "jsd":
        log_m = torch.log((beta * p + (1 - beta) * q).clamp_min(1e-30))
        return beta * (p * (log_p - log_m)).sum(-1) + (1 - beta) * (q * (log_q - log_m)).sum(-1)
    if name == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    raise ValueError(f"divergence: must be one of {DIVERGENCES} (got {name!r})")
