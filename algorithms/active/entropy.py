"""Entropy sampling: query the points whose predicted class distribution has most entropy.

``H(x) = -sum_y p_y(x) log p_y(x)`` (natural log, ``0 log 0 = 0``); the batch is the ``k``
unlabeled points of largest entropy. Shannon entropy as an uncertainty measure for active
learning: Settles, "Active Learning Literature Survey" (2009), eq. (2.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.interfaces.active import LearnerOutputs, LowestScoreSelector


def entropy_scores(probabilities: np.ndarray) -> np.ndarray:
    """``-sum_y p_y log p_y`` per row, with ``0 log 0 = 0``."""
    p = probabilities.astype(np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=1)


@dataclass
class Entropy(LowestScoreSelector):
    """The ``k`` unlabeled points of largest predictive entropy."""

    def priority(self, outputs: LearnerOutputs) -> np.ndarray:
        return -entropy_scores(outputs.probabilities)
