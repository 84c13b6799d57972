"""Churn-aware retraining: the training targets of a new model given a base model's predictions.

Jiang, Narasimhan, Bahri, Cotter & Rostamizadeh, "Churn reduction via distillation", ICLR 2022
(arXiv 2106.02654). The new model minimises the cross-entropy to a target distribution per
example; the methods differ only in that target (``g``: the base model's softmax, ``y``: the
one-hot label):

- :class:`Retrain`: ``y`` (plain retraining, the baseline).
- :class:`Distill`: ``lam * g + (1 - lam) * y`` (the paper's Eq. for distillation, equivalent to
  a churn-constrained objective).
- :class:`Anchor` (Fard et al. 2016, as the paper's baseline): ``alpha * g + (1 - alpha) * y``
  where the base model is right, ``eps * y`` where it is wrong (its loss weight down).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim import checks


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


def distillation_targets(base: np.ndarray, labels: np.ndarray, lam: float) -> np.ndarray:
    """``lam * g + (1 - lam) * onehot(y)`` per row; ``base`` (n, C) rows sum to 1."""
    return (lam * base + (1 - lam) * one_hot(labels, base.shape[1])).astype(np.float32)


def anchor_targets(base: np.ndarray, labels: np.ndarray, alpha: float, eps: float) -> np.ndarray:
    """``alpha * g + (1 - alpha) * y`` where ``argmax g == y``, else ``eps * y``."""
    right = base.argmax(axis=1) == labels
    mixed = distillation_targets(base, labels, alpha)
    return np.where(right[:, None], mixed, eps * one_hot(labels, base.shape[1])).astype(np.float32)


@dataclass
class Retrain:
    """Plain retraining on the labels; the base model is not used."""

    def targets(self, base: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return one_hot(labels, base.shape[1])


@dataclass
class Distill:
    """Distillation from the base model with weight ``lam`` (0: plain retraining)."""

    lam: float = 0.5

    def __post_init__(self) -> None:
        checks.in_interval(self, 0, 1, "lam", closed=True)

    def targets(self, base: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return distillation_targets(base, labels, self.lam)


@dataclass
class Anchor:
    """The anchor method: ``alpha`` towards the base model where it is right; the examples it
    gets wrong weighted by ``eps``. Defaults are ours."""

    alpha: float = 0.5
    eps: float = 1.0

    def __post_init__(self) -> None:
        checks.in_interval(self, 0, 1, "alpha", "eps", closed=True)

    def targets(self, base: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return anchor_targets(base, labels, self.alpha, self.eps)
