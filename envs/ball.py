"""A geometric covering pool with a known answer: ``size`` points uniform in the unit cube
``[0, 1]^dim``; class 1 is the ball of ``radius`` about the cube's centre, class 0 the rest.

The setting of the active-covering theory (Jiang & Rostamizadeh, ICML 2021: a positive region
with a smooth boundary in ``D`` dimensions), where the excess query costs' rates in ``n`` --
``n^{D/(D+1)}`` offline, ``n^{(D-1)/D}`` active -- can be checked by their log-log slopes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim import checks, seeding
from sim.interfaces.active import PoolData


@dataclass
class UniformBall:
    """Uniform points in ``[0, 1]^dim``, positive inside the central ball of ``radius``."""

    dim: int = 2
    size: int = 10000
    radius: float = 0.25
    test_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "dim", "size")
        checks.at_least(self, 0, "test_size", "seed")
        checks.in_interval(self, 0, 0.5, "radius", closed=True)

    def locate(self) -> None:
        """Generated: always available."""

    def load_pool(self) -> PoolData:
        rng = seeding.rng(self.seed, "uniform_ball")
        x = rng.random((self.size + self.test_size, self.dim)).astype(np.float32)
        y = (np.linalg.norm(x - 0.5, axis=1) < self.radius).astype(np.int64)
        name = f"ball{self.dim}d"
        return PoolData(x[: self.size], y[: self.size], x[self.size :], y[self.size :], 2, name)
