"""What an environment hands the runtime: a federated population and its global test set.

Client ``i`` owns the examples ``x[order[offsets[i]:offsets[i + 1]]]`` (``order`` is a
permutation of the training set, ``offsets`` has ``num_clients + 1`` entries). The arrays are put
into the Ray object store once per run and read zero-copy by every worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class FederatedData:
    """A population of clients over one training set, plus a global test set."""

    x: np.ndarray  # (n, *input_shape) float32
    y: np.ndarray  # (n,) int64 labels, or float32 targets for regression
    order: np.ndarray  # (n,) int64: training examples grouped by client
    offsets: np.ndarray  # (num_clients + 1,) int64
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int  # the model's output width: classes, or 1 for scalar regression
    task: str = "classification"  # or "regression" (float32 targets, half squared error)
    optimum: np.ndarray | None = None  # known optimal flat parameters, if any (closed form)

    def __post_init__(self) -> None:
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.order):
            raise ValueError("offsets must start at 0 and end at len(order)")
        if np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets must be non-decreasing")
        if len(self.x) != len(self.y) or len(self.test_x) != len(self.test_y):
            raise ValueError("features and labels differ in length")

    @property
    def num_clients(self) -> int:
        return len(self.offsets) - 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def client_sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def client_indices(self, client: int) -> np.ndarray:
        return self.order[self.offsets[client] : self.offsets[client + 1]]

    def client_labels(self, client: int) -> np.ndarray:
        return self.y[self.client_indices(client)]


class Environment(Protocol):
    """An env config object (a dataclass named by ``_target_`` in ``conf/env``)."""

    def load(self, rng: np.random.Generator) -> FederatedData: ...


class ModelSpec(Protocol):
    """A model config object (a dataclass named by ``_target_`` in ``conf/model``)."""

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module: ...
