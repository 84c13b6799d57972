"""SALT: small model aided large model training, and its baselines.

Rawat, Sadhanala, Rostamizadeh, Chakrabarti, Jitkrittum, Feinberg, Kim, Harutyunyan, Saunshi,
Nado, Shivanna, Reddi, Menon, Anil, Kumar, "A Little Help Goes a Long Way: Efficient LLM Training
by Leveraging Small LMs", arXiv 2410.18779. Stage 1, steps ``t < n_kd``: knowledge distillation
from a small teacher,

    L_t = (1 - w_t) CE(y, q) + w_t tau^2 KL(p^tau || q^tau),

with ``q`` the student's next-token distribution, ``p^tau`` the teacher's at temperature ``tau``
restricted to its top-k tokens and renormalised (the bandwidth the teacher serves), ``q^tau`` the
student's at ``tau``; stage 2: ``CE(y, q)`` alone. ``w_t = w`` (a hard switch at ``n_kd``) or, with
``decay="linear"``, ``w (1 - t / n_kd)``. ``kd_steps=0`` is plain training; ``kd_steps=None``
distils for the whole run (RKD, the baseline the paper shows must be switched off).

SALT_DS (``selection_quantile``): score each training sequence by the teacher's median token loss
``-log p(y_i)`` over the positions whose true token is in the teacher's top ``selection_top_k``
(k = 10 in the paper) and draw the distillation steps' sequences from those scoring at or above
the quantile: hard but learnable examples. [recalled] The defaults ``w = 0.5``, ``tau = 1`` and
the quantile 0.5 are this implementation's, not the paper's; set them per experiment.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sim import checks
from sim.interfaces.teacher_student import SoftLabels
from sim.training.distill import distillation_loss, next_token_loss

DECAYS = ("step", "linear")


def selection_scores(teacher_logits: torch.Tensor, targets: torch.Tensor, k: int) -> np.ndarray:
    """SALT_DS's score per sequence: the median of the teacher's ``-log p(y_i)`` over the
    positions whose true token is in its top ``k``; NaN for a sequence with no such position."""
    log_p = F.log_softmax(teacher_logits.float(), dim=-1)
    token_loss = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    in_top = (log_p.topk(k, dim=-1).indices == targets.unsqueeze(-1)).any(dim=-1)
    masked = torch.where(in_top, token_loss, torch.nan).cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a sequence with no such position
        return np.nanmedian(masked, axis=-1)


@dataclass
class SALT:
    """Distil for the first ``kd_steps`` steps (None: all of them), then next-token loss. The
    default 80 is a quarter of ``experiment=salt``'s 320 steps; set it for the run's length."""

    kd_steps: int | None = 80
    kd_weight: float = 0.5
    temperature: float = 1.0
    decay: str = "step"
    selection_quantile: float | None = None  # SALT_DS
    selection_top_k: int = 10

    def __post_init__(self) -> None:
        checks.at_least(self, 0, "kd_steps", optional=True)
        checks.in_interval(self, 0, 1, "kd_weight", closed=True)
        checks.positive(self, "temperature")
        checks.one_of(self, "decay", DECAYS)
        if self.selection_quantile is not None:
            checks.in_interval(self, 0, 1, "selection_quantile")
        checks.at_least(self, 1, "selection_top_k")

    def sequence_scores(self, teacher_logits: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        """SALT_DS's score of each sequence (run by the teacher actor)."""
        return selection_scores(teacher_logits, targets, self.selection_top_k)

    def generation(self) -> None:
        """SALT trains on the corpus alone."""

    def final_measures(
        self, teacher: object, student: object, prompts: object, new_tokens: int, seed: int
    ) -> dict:
        """None beyond the validation curve."""
        return {}

    def check_steps(self, steps: int) -> None:
        if self.kd_steps is not None and self.kd_steps > steps:
            raise ValueError(
                f"kd_steps: {self.kd_steps} is beyond the run's {steps} steps (protocol.steps)"
            )

    def teacher_weight(self, step: int, steps: int) -> float:
        """``w_t``: ``kd_weight`` before ``kd_steps`` (linearly decayed if asked), then 0."""
        end = steps if self.kd_steps is None else self.kd_steps
        if step >= end:
            return 0.0
        return self.kd_weight * (1 - step / end if self.decay == "linear" else 1.0)

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        soft: SoftLabels | None,
        weight: float,
    ) -> torch.Tensor:
        loss = next_token_loss(logits, targets)
        if weight > 0:
            if soft is None:
                raise ValueError("SALT.loss: a positive teacher weight needs the soft labels")
            kd = distillation_loss(logits, soft, self.temperature)
            loss = (1 - weight) * loss + weight * kd
        return loss
