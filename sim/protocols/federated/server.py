"""The federated protocol's server actor: it holds the global state, adds the workers' task sums
in task order (or stacks their clients' deltas), aggregates them and applies the algorithm's
server update.

It never trains, so neither this module nor the algorithm classes it unpickles import torch
(tests/test_federated_run.py checks): its process starts in about a second, beside the client
workers, and holds no copy of torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import ray

from sim import seeding
from sim.interfaces.federated import Aggregator, FederatedAlgorithm, RoundUpdates, ServerState

log = logging.getLogger(__name__)


@dataclass
class TaskResult:
    """A worker's output for one task (a fixed subset of the cohort): the weighted sum of its
    kept clients' deltas, their weight, count and metric sums, and (``per_client``
    aggregators) each kept client's delta in client order."""

    weighted_sum: np.ndarray  # sum_i w_i delta_i, float64
    weight: float  # sum_i w_i over the clients kept
    count: int = 0
    metric_sums: dict[str, float] = field(default_factory=dict)
    deltas: np.ndarray | None = None  # (count, num_params) float32


def gather(results: Sequence[TaskResult], num_params: int, expected_count: float) -> RoundUpdates:
    """The round's updates: the tasks' sums added in task order (so the total never depends on
    the number of workers), their per-client deltas stacked in task order."""
    weighted_sum = np.zeros(num_params, np.float64)
    metric_sums: dict[str, float] = {}
    for result in results:
        weighted_sum += result.weighted_sum
        for name, value in result.metric_sums.items():
            metric_sums[name] = metric_sums.get(name, 0.0) + value
    per_client = [r for r in results if r.deltas is not None]
    return RoundUpdates(
        weighted_sum=weighted_sum,
        weight=sum(r.weight for r in results),
        count=sum(r.count for r in results),
        expected_count=expected_count,
        metric_sums=metric_sums,
        deltas=np.concatenate([r.deltas for r in per_client]) if per_client else None,
    )


@ray.remote
class Server:
    """Holds the global state; aggregates a round's task results and applies the algorithm's
    server update. Its random stream (``server``, round) feeds an algorithm's noise (DP)."""

    def __init__(
        self,
        algorithm: FederatedAlgorithm,
        state: ServerState | None,
        aggregator: Aggregator | None,
        seed: int,
        expected_count: float,
    ) -> None:
        self.algorithm, self.state = algorithm, state  # None until set_params
        self.aggregator, self.seed, self.expected_count = aggregator, seed, expected_count

    def set_params(self, params: np.ndarray) -> None:
        """Start from fresh parameters: the algorithm's initial server state for them."""
        self.state = self.algorithm.server_init(params)

    def params(self) -> np.ndarray:
        return self.state.params

    def get_state(self) -> ServerState:
        return self.state

    def client_settings(self) -> dict[str, float]:
        """Fields of the algorithm that the clients take from the server state this round."""
        settings = getattr(self.algorithm, "client_settings", None)
        return {} if settings is None else settings(self.state)

    def apply(self, round_index: int, *results: TaskResult) -> float:
        updates = gather(results, len(self.state.params), self.expected_count)
        server_aggregate = getattr(self.algorithm, "server_aggregate", None)
        if server_aggregate is not None:
            rng = seeding.rng(self.seed, "server", round_index)
            delta, self.state = server_aggregate(self.state, updates, rng)
        else:
            delta = (
                updates.mean() if self.aggregator is None else self.aggregator.aggregate(updates)
            )
        if delta is None:
            log.warning("round %d: no client update left; parameters unchanged", round_index)
        else:
            delta = delta.astype(self.state.params.dtype)
            self.state = self.algorithm.server_update(self.state, delta, round_index)
        return updates.weight
