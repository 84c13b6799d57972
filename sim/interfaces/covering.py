"""The active-covering plug-in: a strategy that, given the pool's features, proposes which points
to ask next and learns from the answers (positive or not). The pool and its labels are the active
protocol's :class:`~sim.interfaces.active.PoolData`; only oracle actors hold the labels."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


class CoveringState(Protocol):
    """One run's strategy state. Deterministic: the same answers give the same proposals, so a
    run is replayed exactly from its query log (resume)."""

    def next(self, k: int) -> np.ndarray:
        """Up to ``k`` distinct unqueried pool indices (a short batch is allowed; an empty one
        while the budget lasts is an error)."""
        ...

    def observe(self, indices: np.ndarray, positive: np.ndarray) -> None:
        """The answers to the last proposal: ``positive[i]`` for pool index ``indices[i]``."""
        ...


@runtime_checkable
class CoveringAlgorithm(Protocol):
    """A covering strategy (a dataclass named in ``conf/algorithm``; its fields its config)."""

    def start(self, x: np.ndarray, seed: int) -> CoveringState:
        """The state for pool features ``x`` (n, d); every random draw derives from ``seed``."""
        ...
