"""How the server combines a round's client updates (``aggregator=``): the weighted mean, and the
Byzantine-robust rules that look at every client's update.

- ``mean``: ``sum_i w_i delta_i / sum_i w_i``, added on the workers (the fast path).
- ``median``: the coordinate-wise median; ``trimmed_mean``: per coordinate, the mean after
  dropping the ``fraction`` largest and the ``fraction`` smallest values. Yin, Chen, Ramchandran,
  Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
  ICML 2018 (arXiv 1803.01498), Sec. 3 (Options I and II).
- ``krum``: the update with the smallest sum of squared distances to its ``n - f - 2`` nearest
  neighbours. Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries:
  Byzantine Tolerant Gradient Descent", NeurIPS 2017, Sec. 4 (Definition of Krum).

The robust rules are unweighted (as in both papers): every client counts once, whatever its
number of examples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sim import checks
from sim.interfaces.federated import CohortSampling, RoundUpdates

log = logging.getLogger(__name__)


def coordinate_median(deltas: np.ndarray) -> np.ndarray:
    """The median of each coordinate over the rows of ``deltas`` (n, d)."""
    return np.median(deltas.astype(np.float64), axis=0)


def trimmed_mean(deltas: np.ndarray, fraction: float) -> np.ndarray:
    """Per coordinate, the mean of the rows left after dropping the ``floor(fraction * n)``
    largest and as many smallest values."""
    cut = int(np.floor(fraction * len(deltas)))
    ordered = np.sort(deltas.astype(np.float64), axis=0)
    return ordered[cut : len(deltas) - cut].mean(axis=0)


def krum_scores(deltas: np.ndarray, f: int) -> np.ndarray:
    """Each row's sum of squared distances to its ``n - f - 2`` nearest other rows."""
    x = deltas.astype(np.float64)
    squared = (x * x).sum(axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * x @ x.T, 0.0)
    np.fill_diagonal(distances, np.inf)
    nearest = np.sort(distances, axis=1)[:, : len(x) - f - 2]
    return nearest.sum(axis=1)


def krum(deltas: np.ndarray, f: int) -> np.ndarray:
    """The row of ``deltas`` with the smallest Krum score (the first on ties)."""
    if len(deltas) < f + 3:
        raise ValueError(f"krum needs n >= f + 3 updates (n={len(deltas)}, f={f})")
    return deltas[int(np.argmin(krum_scores(deltas, f)))].astype(np.float64)


@dataclass
class Mean:
    """The clients' weighted mean delta (weights: the algorithm's, e.g. examples for FedAvg)."""

    per_client: ClassVar[bool] = False

    def aggregate(self, updates: RoundUpdates) -> np.ndarray | None:
        return updates.mean()


@dataclass
class Median:
    """The coordinate-wise median of the clients' deltas (Yin et al. 2018, Option I)."""

    per_client: ClassVar[bool] = True

    def aggregate(self, updates: RoundUpdates) -> np.ndarray | None:
        return coordinate_median(updates.deltas) if updates.count else None


@dataclass
class TrimmedMean:
    """The coordinate-wise ``fraction``-trimmed mean (Yin et al. 2018, Option II)."""

    per_client: ClassVar[bool] = True

    fraction: float = 0.1

    def __post_init__(self) -> None:
        checks.in_interval(self, 0.0, 0.5, "fraction")

    def aggregate(self, updates: RoundUpdates) -> np.ndarray | None:
        return trimmed_mean(updates.deltas, self.fraction) if updates.count else None


@dataclass
class Krum:
    """Krum with ``f`` Byzantine clients assumed (Blanchard et al. 2017); None: the most its
    guarantee allows among a round's ``n`` clients, ``f = ceil(n / 2) - 2`` (``n > 2f + 2``,
    at least 0). A round with fewer than ``f + 3`` clients (a small Poisson cohort, dropped
    clients) leaves the parameters unchanged, with a warning; a fixed cohort that small is
    refused before the run starts."""

    per_client: ClassVar[bool] = True

    f: int | None = None

    def __post_init__(self) -> None:
        checks.at_least(self, 0, "f", optional=True)

    def check_sampling(self, sampling: CohortSampling) -> None:
        if self.f is not None and sampling.kind == "fixed" and sampling.size < self.f + 3:
            raise ValueError(
                f"f: Krum with f={self.f} needs at least {self.f + 3} clients a round "
                f"(protocol.clients_per_round is {sampling.size})"
            )

    def aggregate(self, updates: RoundUpdates) -> np.ndarray | None:
        f = self.f if self.f is not None else max(0, -(-updates.count // 2) - 2)
        if updates.count < f + 3:
            if updates.count:
                log.warning(
                    "krum: %d updates, fewer than f + 3 = %d; none kept", updates.count, f + 3
                )
            return None
        return krum(updates.deltas, f)
