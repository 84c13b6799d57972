"""What a pool environment hands the active-learning runtime.

:class:`PoolData` is the whole truth (features, hidden labels, a labelled test set); only the
oracle ever holds it. Everyone else sees :class:`PoolView`, which has no pool labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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


class PoolEnvironment(Protocol):
    """A pool env config object (a dataclass named by ``_target_`` in ``conf/env``)."""

    def locate(self) -> None:
        """Raise FileNotFoundError, saying how to get the data, if it is not on this machine."""
        ...

    def load_pool(self) -> PoolData: ...
