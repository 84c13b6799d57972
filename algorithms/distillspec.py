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

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sim import checks
from sim.interfaces.teacher_student import SoftLabels

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


DATA_SOURCES = ("fixed", "target", "draft", "mixed")


def full_distribution(soft: SoftLabels, vocab_size: int) -> torch.Tensor:
    """The teacher's distribution over the whole vocabulary from its soft labels: scattered from
    the top-k (zero elsewhere), or as served when it sent every token (``indices`` None)."""
    if soft.indices is None:
        return soft.probabilities.float()
    shape = (*soft.probabilities.shape[:-1], vocab_size)
    full = torch.zeros(shape, dtype=torch.float32, device=soft.probabilities.device)
    return full.scatter_(-1, soft.indices, soft.probabilities.float())


@dataclass
class DistillSpec:
    """Train the draft on ``divergence(target || draft)`` (``fkl``, ``rkl``, ``jsd`` with
    ``beta``, ``tvd``) over the target's full next-token distributions, on ``data``: the corpus
    (``fixed``), sequences the target generates from corpus prompts (``target``), sequences the
    draft generates (``draft``, on-policy, regenerated every ``refresh`` steps), or half corpus
    and half on-policy (``mixed``). Generations continue ``prompt_length``-token corpus
    prompts at ``generation_temperature``."""

    divergence: str = "fkl"
    beta: float = 0.5
    data: str = "fixed"
    refresh: int = 20
    prompt_length: int = 16
    generation_temperature: float = 1.0
    temperature: float = 1.0  # of both distributions in the loss (the served one included)
    selection_quantile: float | None = None  # no data selection

    def __post_init__(self) -> None:
        checks.one_of(self, "divergence", DIVERGENCES)
        checks.in_interval(self, 0, 1, "beta", closed=True)
        checks.one_of(self, "data", DATA_SOURCES)
        checks.at_least(self, 1, "refresh", "prompt_length")
        checks.at_least(self, 0, "generation_temperature")
        checks.positive(self, "temperature")

    def check_steps(self, steps: int) -> None:
        """Any length will do."""

    def teacher_weight(self, step: int, steps: int) -> float:
        return 1.0  # every step learns from the target alone

    def sequence_scores(self, teacher_logits: torch.Tensor, targets: torch.Tensor) -> None:
        raise NotImplementedError("DistillSpec selects no data")

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, soft: SoftLabels | None, weight: float
    ) -> torch.Tensor:
        if soft is None:
            raise ValueError("DistillSpec.loss needs the target's distributions")
        p = full_distribution(soft, logits.shape[-1])
        target_logits = torch.log(p.clamp_min(1e-30))
        return divergence(
            self.divergence, target_logits, logits / self.temperature, self.beta
        ).mean()
