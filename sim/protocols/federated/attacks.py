"""Simulated Byzantine clients (``protocol.byzantine_fraction``, ``protocol.attack``), to test
the robust aggregators against.

A fixed set of clients, drawn from the run's ``byzantine`` stream, replaces what it sends:

- ``sign_flip``: ``-scale * delta`` (the reversed, amplified update of e.g. Li et al., "RSA:
  Byzantine-Robust Stochastic Aggregation Methods", AAAI 2019, Sec. 5),
- ``scale``: ``scale * delta`` (an amplified update, the boosting of model-replacement attacks),
- ``noise``: ``N(0, scale^2 I)`` in place of the update (Blanchard et al., NeurIPS 2017, Sec. 5),
- ``label_flip``: an honest update trained on flipped labels ``y -> C - 1 - y`` (classification).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim import seeding

ATTACKS = ("sign_flip", "scale", "noise", "label_flip")


def byzantine_clients(seed: int, population: int, fraction: float) -> np.ndarray:
    """``round(fraction * population)`` distinct client ids, sorted, from the ``byzantine``
    stream."""
    count = int(round(fraction * population))
    chosen = seeding.rng(seed, "byzantine").choice(population, size=count, replace=False)
    return np.sort(chosen)


def flip_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels ``y -> num_classes - 1 - y``."""
    return num_classes - 1 - y


def attacked_delta(kind: str, delta: np.ndarray, scale: float, rng: np.random.Generator):
    """What a Byzantine client sends in place of its honest ``delta``."""
    if kind == "sign_flip":
        return (-scale * delta).astype(delta.dtype)
    if kind == "scale":
        return (scale * delta).astype(delta.dtype)
    if kind == "noise":
        return rng.normal(0.0, scale, delta.shape).astype(delta.dtype)
    return delta  # label_flip: the update itself is honest, its training data is not


@dataclass(frozen=True)
class Attack:
    """The run's attackers and what they do; ``clients`` empty: no attack."""

    kind: str = "sign_flip"
    scale: float = 4.0
    clients: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def involves(self, client: int) -> bool:
        return bool(np.isin(client, self.clients))


NO_ATTACK = Attack()
