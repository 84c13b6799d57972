"""Least-confidence sampling: query the points whose top class probability is lowest.

``least_confidence(x) = 1 - p_1(x)``; the batch is the ``k`` unlabeled points where it is
largest. Lewis & Gale, "A sequential algorithm for training text classifiers", SIGIR 1994;
Settles, "Active Learning Literature Survey" (2009), eq. (2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.interfaces.active import LearnerOutputs, LowestScoreSelector


def least_confidence_scores(probabilities: np.ndarray) -> np.ndarray:
    """``1 - max_y p_y`` per row."""
    return 1.0 - probabilities.max(axis=1)


@dataclass
class LeastConfidence(LowestScoreSelector):
    """The ``k`` unlabeled points of largest ``1 - p_1``."""

    def priority(self, outputs: LearnerOutputs) -> np.ndarray:
        return -least_confidence_scores(outputs.probabilities)
