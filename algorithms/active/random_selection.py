"""Random sampling: the passive baseline every active-learning method is measured against.

The batch is ``k`` unlabeled points drawn uniformly without replacement from the round's stream
(``seeding.rng(seed, "select", round)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.interfaces.active import LearnerOutputs


@dataclass
class RandomSelection:
    """``k`` unlabeled points uniformly at random."""

    def select(
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        return np.sort(rng.choice(np.flatnonzero(~labeled), batch_size, replace=False))
