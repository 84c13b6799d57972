"""IWeS: importance-weighted subset selection.

Citovsky, DeSalvo, Kumar, Ramalingam, Rostamizadeh & Wang, "Leveraging Importance Weights in
Subset Selection", ICLR 2023 (arXiv 2301.12052), Algorithm 1. The models are retrained once per
batch (the protocol's round); within a batch, examples are visited one at a time in random order
and each is taken with its probability ``p(x)``; a taken example gets the importance weight
``min(1 / p(x), weight_cap)``, and the learner's loss counts it that many times (the protocol
hands the weights to ``Learner.fit``).

Two sampling probabilities (Section 3):
- entropy-based disagreement of two models ``f, g`` trained from different initialisations
  (``learner=ensemble``), ``p(x) = min(1, sum_y |f_y log2 f_y - g_y log2 g_y|)``;
- entropy only, one model: ``p(x) = H(f(x)) / log2(classes)`` (with ``learner=ensemble``,
  ``f`` is the members' mean probabilities, or with ``entropy_model=first`` the first member's
  alone, the paper's one model, while the ensemble still trains and predicts).

Every ``p`` is floored at ``floor`` (an addition; ``floor=0``: the paper's). The paper's
model-certain points have ``p`` near 0: they are all but never taken, and with ``p = 0`` never; a
batch that the points of ``p > 0`` cannot fill is filled uniformly from the rest, weighing 1
(:func:`importance_sample`). ``weight_cap`` 1 trains unweighted (the protocol then hands the
learner no weights at all), None uncapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim import checks
from sim.interfaces.active import LearnerOutputs, WeightedSelection

VARIANTS = ("disagreement", "entropy")
ENTROPY_MODELS = ("mean", "first")
P_MIN = 1e-12  # the smallest probability a weight is the inverse of (1e12: finite in float32)


def plogp2(p: np.ndarray) -> np.ndarray:
    """``p log2 p`` elementwise, 0 where ``p`` is 0."""
    p = np.asarray(p, np.float64)
    return np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)


def disagreement_probability(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``min(1, sum_y |f_y log2 f_y - g_y log2 g_y|)`` per row of two models' (n, classes)
    probabilities."""
    return np.minimum(1.0, np.abs(plogp2(f) - plogp2(g)).sum(axis=1))


def entropy_probability(f: np.ndarray) -> np.ndarray:
    """``H(f(x)) / log2(classes)`` per row: the entropy normalised to [0, 1]."""
    classes = f.shape[1]
    if classes < 2:
        return np.zeros(len(f))
    return np.clip(-plogp2(f).sum(axis=1) / np.log2(classes), 0.0, 1.0)


def importance_sample(
    p: np.ndarray, candidates: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """``k`` of ``candidates`` (pool indices; ``p`` their probabilities) taken one at a time
    (Algorithm 1): each pass visits the not-yet-taken ones in a fresh random order and takes
    each with its probability, until ``k`` are taken. Returns positions into ``candidates``, in
    the order taken.

    Drawn in closed form, with the same distribution as the passes and bounded work whatever
    the ``p``: the pass in which candidate ``i`` is taken is Geometric(``p_i``) (inverse CDF),
    the order within a pass uniform, and the batch is the first ``k`` by (pass, order).
    Candidates of ``p = 0`` are never taken by the passes; when fewer than ``k`` have ``p > 0``
    (all of which are taken), the rest of the batch is drawn uniformly from them."""
    if k > len(candidates):
        raise ValueError(f"importance_sample: {k} asked from {len(candidates)} candidates")
    p = np.asarray(p, np.float64)
    if len(p) and not (p.min() >= 0 and p.max() <= 1):
        raise ValueError("importance_sample: every probability must be in [0, 1]")
    with np.errstate(divide="ignore", invalid="ignore"):
        trials = np.floor(np.log1p(-rng.random(len(p))) / np.log1p(-p)) + 1  # Geometric(p)
    passes = np.where(p >= 1, 1.0, np.where(p > 0, trials, np.inf))
    return np.lexsort((rng.random(len(p)), passes))[:k]


def importance_weights(p: np.ndarray, cap: float | None) -> np.ndarray:
    """``min(1 / p, cap)`` (no cap: ``cap`` None, and at most ``1 / P_MIN``, so that a
    learner's float32 loss stays finite); a point of ``p = 0``, taken only to fill a batch
    (:func:`importance_sample`), weighs 1."""
    with np.errstate(divide="ignore"):
        weights = np.where(p > 0, 1.0 / np.maximum(p, P_MIN), 1.0)
    return weights if cap is None else np.minimum(weights, cap)


@dataclass
class IWeS:
    """IWeS (module docstring): ``variant`` ``disagreement`` (needs ``learner=ensemble``, two
    models) or ``entropy`` (one model; ``entropy_model``: which, with an ensemble); weights
    ``min(1/p, weight_cap)``; ``p`` floored at ``floor``."""

    variant: str = "disagreement"
    weight_cap: float | None = 10.0  # None: no cap (1: no weighting)
    floor: float = 0.01  # 0: the paper's probabilities
    entropy_model: str = "mean"  # entropy variant: the ensemble's mean, or its first model's

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant: must be one of {VARIANTS} (got {self.variant!r})")
        if self.entropy_model not in ENTROPY_MODELS:
            raise ValueError(
                f"entropy_model: must be one of {ENTROPY_MODELS} (got {self.entropy_model!r})"
            )
        checks.at_least(self, 1, "weight_cap", optional=True)
        checks.in_interval(self, 0, 1, "floor", closed=True)

    @property
    def models_needed(self) -> int:
        return 2 if self.variant == "disagreement" else 1

    def probabilities(self, outputs: LearnerOutputs) -> np.ndarray:
        """Every pool point's sampling probability, floored."""
        if self.variant == "disagreement":
            if outputs.members is None or outputs.members.shape[1] < 2:
                raise ValueError("IWeS disagreement needs two models' outputs (learner=ensemble)")
            p = disagreement_probability(outputs.members[:, 0], outputs.members[:, 1])
        elif self.entropy_model == "first" and outputs.members is not None:
            p = entropy_probability(outputs.members[:, 0])  # one model, as in the paper
        else:
            p = entropy_probability(outputs.probabilities)
        return np.maximum(p, self.floor)

    def select(
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
    ) -> WeightedSelection:
        candidates = np.flatnonzero(~labeled)
        p = self.probabilities(outputs)[candidates]
        taken = importance_sample(p, candidates, batch_size, rng)
        return WeightedSelection(candidates[taken], importance_weights(p[taken], self.weight_cap))
