"""The retraining plug-in: the targets a new model is trained on, given the base model's class
probabilities on the training rows and their labels (churn reduction)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class RetrainingAlgorithm(Protocol):
    """A dataclass named in ``conf/algorithm``; its fields its config."""

    def targets(self, base: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(n, C) float32 target weights per class (a distribution, or a scaled one-hot) from
        the base model's probabilities ``base`` (n, C) and the labels ``labels`` (n,)."""
        ...
