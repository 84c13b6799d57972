"""Margin sampling: query the points whose top two class probabilities are closest.

``margin(x) = p_1(x) - p_2(x)`` (the largest and second-largest predicted probabilities); the
batch is the ``k`` unlabeled points of smallest margin. Scheffer, Decomain & Wrobel, "Active
hidden Markov models for information extraction", IDA 2001; studied as a batch method for MLPs
on tabular data by Bahri, Jiang, Schuster & Rostamizadeh, "Is margin all you need? An extensive
empirical study of active learning on tabular data", arXiv 2210.03822 (2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.interfaces.active import LearnerOutputs, LowestScoreSelector


def margin_scores(probabilities: np.ndarray) -> np.ndarray:
    """``p_1 - p_2`` per row: the gap between the two largest probabilities (0 for one class)."""
    if probabilities.shape[1] < 2:
        return np.zeros(len(probabilities), probabilities.dtype)
    top_two = np.partition(probabilities, -2, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


@dataclass
class Margin(LowestScoreSelector):
    """The ``k`` unlabeled points of smallest margin."""

    def priority(self, outputs: LearnerOutputs) -> np.ndarray:
        return margin_scores(outputs.probabilities)
