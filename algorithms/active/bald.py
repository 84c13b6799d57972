"""BALD: query the points where the model's posterior disagrees most about the label.

``I(y; w | x) = H(mean_t p_t(x)) - mean_t H(p_t(x))`` (natural log), the mutual information
between the label and the parameters, estimated from ``T`` MC-dropout samples ``p_t`` of the
learner's predictive distribution (Houlsby, Huszar, Ghahramani & Lengyel, "Bayesian Active
Learning for Classification and Preference Learning", arXiv 1112.5745, 2011, eq. (4); with MC
dropout as the posterior: Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image
Data", ICML 2017). The batch is the ``k`` unlabeled points of largest score (top-k, not
BatchBALD); one of the selectors of Bahri et al.'s margin study (arXiv 2210.03822). Needs a
learner trained with dropout (``learner.dropout``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms.active.entropy import entropy_scores
from sim import checks
from sim.interfaces.active import LearnerOutputs, LowestScoreSelector


def bald_scores(samples: np.ndarray) -> np.ndarray:
    """``H(mean_t p_t) - mean_t H(p_t)`` per row of ``(n, T, classes)`` sampled probabilities."""
    n, t, classes = samples.shape
    each = entropy_scores(samples.reshape(n * t, classes)).reshape(n, t)
    return entropy_scores(samples.mean(axis=1)) - each.mean(axis=1)


@dataclass
class BALD(LowestScoreSelector):
    """The ``k`` unlabeled points of largest BALD score, from ``mc_samples`` MC-dropout samples."""

    mc_samples: int = 20

    def __post_init__(self) -> None:
        checks.at_least(self, 2, "mc_samples")

    def priority(self, outputs: LearnerOutputs) -> np.ndarray:
        if outputs.samples is None:
            raise ValueError("BALD needs MC-dropout samples of the learner (mc_samples)")
        return -bald_scores(outputs.samples)
