"""The federated protocol's server actor: it holds the global state, adds the workers' task sums
in task order and applies the algorithm's server update.

It never trains, so neither this module nor the algorithm classes it unpickles import torch
(tests/test_federated_run.py checks): its process starts in about a second, beside the client
workers, and holds no copy of torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import ray

from sim.interfaces.federated import FederatedAlgorithm, ServerState

log = logging.getLogger(__name__)


@dataclass
class TaskResult:
    """A worker's pre-aggregated output for one task (a fixed subset of the cohort)."""

    weighted_sum: np.ndarray  # sum_i w_i delta_i, float64
    weight: float  # sum_i w_i over the clients kept


def combine(results: list[TaskResult]) -> tuple[np.ndarray | None, float]:
    """Weighted mean delta over tasks, added in task order; ``None`` if every client was dropped."""
    total = sum(r.weight for r in results)
    if total <= 0:
        return None, 0.0
    weighted_sum = results[0].weighted_sum.copy()
    for result in results[1:]:
        weighted_sum += result.weighted_sum
    return weighted_sum / total, total


@ray.remote
class Server:
    """Holds the global state; combines task sums and applies the algorithm's server update."""

    def __init__(self, algorithm: FederatedAlgorithm, state: ServerState | None) -> None:
        self.algorithm, self.state = algorithm, state  # None until set_params

    def set_params(self, params: np.ndarray) -> None:
        """Start from fresh parameters: the algorithm's initial server state for them."""
        self.state = self.algorithm.server_init(params)

    def params(self) -> np.ndarray:
        return self.state.params

    def get_state(self) -> ServerState:
        return self.state

    def apply(self, round_index: int, *results: TaskResult) -> float:
        mean_delta, total_weight = combine(list(results))
        if mean_delta is None:
            log.warning("round %d: every client was dropped; parameters unchanged", round_index)
        else:
            delta = mean_delta.astype(self.state.params.dtype)
            self.state = self.algorithm.server_update(self.state, delta, round_index)
        return total_weight
