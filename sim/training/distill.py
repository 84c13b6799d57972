"""Distillation building blocks: a teacher's top-k soft labels at a temperature, the losses a
student takes from them, and DistillSpec's divergences between a target's and a draft's
next-token distributions (Zhou et al., ICLR 2024, arXiv 2310.08461; ``m = beta p + (1 - beta) q``):
forward KL ``KL(p || q)``, reverse KL ``KL(q || p)``, ``JSD[beta](p || q) = beta KL(p || m) +
(1 - beta) KL(q || m)`` and ``TVD(p, q) = 1/2 sum |p - q|``. Pure torch; no Ray here."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sim.interfaces.teacher_student import SoftLabels


def top_k_soft_labels(logits: torch.Tensor, k: int, temperature: float) -> SoftLabels:
    """The top-``k`` tokens of ``softmax(logits / temperature)`` per position, their
    probabilities renormalised to sum to 1 (the bandwidth a teacher serves)."""
    probabilities = F.softmax(logits.float() / temperature, dim=-1)
    top, indices = probabilities.topk(k, dim=-1)
    return SoftLabels(indices, top / top.sum(dim=-1, keepdim=True))


def distillation_loss(
    student_logits: torch.Tensor, soft: SoftLabels, temperature: float
) -> torch.Tensor:
    """``tau^2 KL(p^tau || q^tau)`` per position, averaged: ``sum_k p_k (log p_k - log q_k)``
    over the teacher's top-k support (its whole distribution when ``soft.indices`` is None:
    ``protocol.top_k=null``), ``q`` the student's full softmax at ``tau`` (Hinton, Vinyals &
    Dean, "Distilling the Knowledge in a Neural Network", 2015: the ``tau^2`` keeps the
    gradients' scale across temperatures)."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    if soft.indices is not None:
        log_q = log_q.gather(-1, soft.indices)
    p = soft.probabilities
    kl = (p * (torch.log(p.clamp_min(1e-30)) - log_q)).sum(dim=-1)
    return temperature**2 * kl.mean()


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the true next tokens (nats per token)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def agreement(teacher_probabilities: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Per position, the chance that speculative sampling accepts the student's (draft's) token:
    ``sum_x min(p(x), q(x)) = 1 - TVD(p, q)`` (Leviathan et al. 2023, Definition 3.1)."""
    q = F.softmax(student_logits.float(), dim=-1)
    return torch.minimum(teacher_probabilities.float(), q).sum(dim=-1)


def greedy_agreement(
    teacher_probabilities: torch.Tensor, student_logits: torch.Tensor
) -> torch.Tensor:
    """Per position, 1 where the student's argmax is the teacher's (greedy acceptance), else 0."""
    same = teacher_probabilities.argmax(dim=-1) == student_logits.argmax(dim=-1)
    return same.float()


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
