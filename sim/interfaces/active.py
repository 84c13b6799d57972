"""The active-learning plug-ins: a pool env, a learner, and a selector, and what they exchange.

:class:`PoolData` is the whole truth (features, hidden labels, a labelled test set); only the
oracle actors ever hold it. Everyone else sees :class:`PoolView`, which has no pool labels. A
selector sees the learner's :class:`LearnerOutputs` on the pool, which points are labeled, and
the labels revealed so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class PoolView:
    """The pool's features and the labelled test set; what learners and selectors may see."""

    x: np.ndarray  # (n, d) float32 pool features
    test_x: np.ndarray
    test_y: np.ndarray  # test labels: the evaluation set is not part of the pool
    num_classes: int
    name: str = ""

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class PoolData:
    """A pool with its hidden labels ``y``: loaded and held only by oracle actors."""

    x: np.ndarray
    y: np.ndarray  # (n,) int64 hidden labels
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or len(self.test_x) != len(self.test_y):
            raise ValueError("features and labels differ in length")
        if self.x.ndim != 2 or self.test_x.ndim != 2:
            raise ValueError("pool features must be 2-d (examples, features)")

    def view(self) -> PoolView:
        return PoolView(self.x, self.test_x, self.test_y, self.num_classes, self.name)


@runtime_checkable
class PoolEnvironment(Protocol):
    """A pool env config object (a dataclass named by ``_target_`` in ``conf/env``)."""

    def locate(self) -> None:
        """Raise FileNotFoundError, saying how to get the data, if it is not on this machine."""
        ...

    def load_pool(self) -> PoolData: ...


@dataclass(frozen=True)
class LearnerOutputs:
    """What a selector sees of the learner on (a block of) the pool. A learner of several models
    (:attr:`Learner.models` > 1) gives their mean probabilities, the first model's embeddings,
    and each model's probabilities in ``members``; a selector with an ``mc_samples`` attribute
    also gets that many MC-dropout samples of the (first) model's probabilities (BALD)."""

    probabilities: np.ndarray  # (n, classes) float32, rows sum to 1
    embeddings: np.ndarray  # (n, width) float32: the last hidden layer's activations
    members: np.ndarray | None = None  # (n, models, classes) float32, or None for one model
    samples: np.ndarray | None = None  # (n, mc_samples, classes) MC-dropout samples, if asked

    @classmethod
    def concatenate(cls, blocks: list[LearnerOutputs]) -> LearnerOutputs:
        def joined(arrays: list[np.ndarray | None]) -> np.ndarray | None:
            return None if any(a is None for a in arrays) else np.concatenate(arrays)

        return cls(
            np.concatenate([b.probabilities for b in blocks]),
            np.concatenate([b.embeddings for b in blocks]),
            joined([b.members for b in blocks]),
            joined([b.samples for b in blocks]),
        )

    def __len__(self) -> int:
        return len(self.probabilities)


@runtime_checkable
class Learner(Protocol):
    """The model trained on the revealed labels (a dataclass named in ``conf/learner``).

    ``fit`` trains from ``init`` (flat parameters) or a fresh initialisation from ``torch_seed``
    and returns ``(model, loss)``; with ``weights`` (n,) each example's loss counts that many
    times (importance weighting). ``build`` makes the torch module that the flat parameters
    fill; ``sim.training.learner.expose`` gives its :class:`LearnerOutputs` on pool rows.
    ``warm_start``: whether the next round starts from this round's parameters. ``models``: how
    many models it trains (their outputs are ``LearnerOutputs.members``).
    """

    warm_start: bool

    @property
    def models(self) -> int: ...

    def build(self, num_features: int, num_classes: int) -> Any: ...

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        num_classes: int,
        rng: np.random.Generator,
        torch_seed: int,
        init: np.ndarray | None = None,
        device: Any = "cpu",
        weights: np.ndarray | None = None,
    ) -> tuple[Any, float]: ...


@runtime_checkable
class Selector(Protocol):
    """What an active-learning selector plugin implements (a dataclass; its fields its config)."""

    def select(
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
    ) -> np.ndarray | WeightedSelection:
        """``batch_size`` distinct unlabeled pool indices (or a :class:`WeightedSelection`).
        ``labeled`` is the (n,) bool mask; ``labels`` the (n,) revealed labels, -1 where
        unlabeled. A selector that needs several models' outputs says how many in a
        ``models_needed`` attribute; the protocol refuses a learner with fewer."""
        ...


@dataclass(frozen=True)
class WeightedSelection:
    """A selector's answer with an importance weight per chosen point: the learner's loss counts
    each of these examples ``weight`` times in every later round (the seed set and unweighted
    selections count once)."""

    indices: np.ndarray  # (k,) int pool indices
    weights: np.ndarray  # (k,) float, > 0


@runtime_checkable
class StatefulSelector(Selector, Protocol):
    """A selector that keeps state across rounds, e.g. a clustering of the pool computed once.

    The protocol calls ``initial_state`` once, in the first round that selects (on that round's
    learner outputs), keeps the returned arrays (and checkpoints them, so a resumed run
    continues with the same state), and passes them to every ``select`` as ``state``; ``select``
    returns the chosen indices (or a :class:`WeightedSelection`) and the state for the next
    round."""

    def initial_state(
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]: ...

    def select(  # type: ignore[override]
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
        state: dict[str, np.ndarray],
    ) -> tuple[np.ndarray | WeightedSelection, dict[str, np.ndarray]]: ...


def lowest_unlabeled(scores: np.ndarray, labeled: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest ``scores`` among unlabeled points, smallest first; equal
    scores are taken and ordered by index, NaN counts as +inf. O(n) by partial sorting, so a
    10^6-point pool takes milliseconds."""
    candidates = np.flatnonzero(~labeled)
    if k > len(candidates):
        raise ValueError(f"batch of {k} asked from {len(candidates)} unlabeled points")
    values = scores[candidates].astype(np.float64)
    values[np.isnan(values)] = np.inf
    if k < len(candidates):
        kth = np.partition(values, k - 1)[k - 1]  # the k-th smallest score
        below = np.flatnonzero(values < kth)
        tied = np.flatnonzero(values == kth)[: k - len(below)]  # the lowest indices first
        kept = np.concatenate([below, tied])
        candidates, values = candidates[kept], values[kept]
    return candidates[np.lexsort((candidates, values))]


class LowestScoreSelector:
    """Base of the selectors that rank points by a score of the learner's outputs: picks the
    ``k`` unlabeled points of lowest :meth:`priority` (ties by index)."""

    def priority(self, outputs: LearnerOutputs) -> np.ndarray:
        raise NotImplementedError

    def select(
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        return lowest_unlabeled(self.priority(outputs), labeled, batch_size)
