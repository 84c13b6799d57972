"""The federated plug-ins: a population (``FederatedData`` from an env), a model spec, and the
algorithm interface (``server_init``, ``client_update``, ``server_update``).

Client ``i`` owns the examples ``x[order[offsets[i]:offsets[i + 1]]]`` (``order`` is a
permutation of the training set, ``offsets`` has ``num_clients + 1`` entries). The arrays are put
into the Ray object store once per run and read zero-copy by every worker.

Sign convention: a client's ``delta = theta_server - theta_client`` is a pseudo-gradient; the
server applies ``theta <- server_opt(theta, aggregate)``, where the aggregate is the clients'
weighted mean delta (``aggregator=mean``, added on the workers) or what an :class:`Aggregator`
makes of every client's delta (``aggregator=median``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

ENGINES = ("sequential", "vectorized")  # how a worker runs a task's client updates

# An extra term of a client's local objective: ``term(params, server_params)`` -> a scalar
# tensor, where both are the model's parameter tensors in ``module.parameters()`` order
# (FedProx: ``mu/2 ||w - w_server||^2``). Both engines add it to every minibatch loss.
LossTerm = Callable[[Sequence["torch.Tensor"], Sequence["torch.Tensor"]], "torch.Tensor"]


@dataclass(frozen=True)
class FederatedData:
    """A population of clients over one training set, plus a global test set."""

    x: np.ndarray  # (n, *input_shape) float32 features, or int64 indices (letters of a window)
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

    def pooled(self) -> FederatedData:
        """The same examples as one client (client 0) holding every client's data, in order."""
        offsets = np.array([0, len(self.order)], np.int64)
        return replace(self, offsets=offsets)


@runtime_checkable
class Environment(Protocol):
    """A federated env config object (a dataclass named by ``_target_`` in ``conf/env``)."""

    def load(self, rng: np.random.Generator) -> FederatedData: ...


@runtime_checkable
class ModelSpec(Protocol):
    """A model config object (a dataclass named by ``_target_`` in ``conf/model``). It may also
    have ``check(input_shape, num_classes)``, raising ``ValueError`` for an input it cannot take:
    the driver calls it in ``prepare`` (before the workers start), and the run fails with one
    line ``model: ...``.
    ``build`` runs in the workers: without ``check``, such an input fails the run when they
    start (the error names the worker and carries the spec's message)."""

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module: ...


@dataclass
class ServerState:
    """The global state: flat parameters and the server optimizer's (or algorithm's) arrays."""

    params: np.ndarray
    opt_state: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ClientUpdate:
    """One client's contribution: ``delta = theta_server - theta_client`` (a pseudo-gradient),
    its aggregation weight, and scalar metrics (averaged over the cohort by weight of 1)."""

    delta: np.ndarray
    weight: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RoundUpdates:
    """What the server gets in a round, added over the tasks in task order: the weighted sum of
    the kept clients' deltas (float64), their total weight and count, the sums of their numeric
    metrics, the cohort size the round expected (a fixed cohort's size, or a Poisson cohort's
    mean), and, when the aggregator asks for them, every kept client's delta."""

    weighted_sum: np.ndarray
    weight: float
    count: int
    expected_count: float
    metric_sums: dict[str, float] = field(default_factory=dict)
    deltas: np.ndarray | None = None  # (count, num_params) float32, task after task

    def mean(self) -> np.ndarray | None:
        """The weighted mean delta; None when no weight is left (every client dropped)."""
        return self.weighted_sum / self.weight if self.weight > 0 else None


@runtime_checkable
class Aggregator(Protocol):
    """How the server turns a round's client updates into one delta (``aggregator=``; a
    dataclass named by ``_target_`` in ``conf/aggregator``). ``per_client`` False: the workers'
    weighted sums are enough (the fast path); True: the workers send every client's delta, to
    the server actor, never through the driver. ``aggregate`` returns None when no client is
    left."""

    per_client: ClassVar[bool]

    def aggregate(self, updates: RoundUpdates) -> np.ndarray | None: ...


@runtime_checkable
class FederatedAlgorithm(Protocol):
    """What a federated algorithm plugin implements (a dataclass; its fields are its config).

    Optional hooks (DP-FedAvg has them): ``server_aggregate(state, updates, rng)`` replaces the
    aggregator (returns the aggregate delta, or None, and the server state); ``client_settings(
    state)`` returns fields that the clients' copy of the algorithm takes from the server state
    each round (an adaptive clip); ``privacy_spent(rounds, sampling, with_pld)`` the privacy
    spent after ``rounds`` rounds (:class:`CohortSampling`).

    ``engines`` declares, in the class's own body, the client engines it supports: a class that
    does not declare it runs on ``"sequential"`` only, whatever its base classes declare (so a
    subclass that overrides ``client_update`` never inherits a batched update it did not write).
    ``"vectorized"`` calls ``client_update_batch`` (:class:`BatchedAlgorithm`).
    """

    def server_init(self, params: np.ndarray) -> ServerState: ...

    def client_update(
        self, model: Any, params: np.ndarray, data: Any, rng: np.random.Generator, round_index: int
    ) -> ClientUpdate: ...

    def server_update(
        self, state: ServerState, mean_delta: np.ndarray, round_index: int
    ) -> ServerState: ...


class BatchedAlgorithm(FederatedAlgorithm, Protocol):
    """An algorithm that also updates several clients at once (``client_engine=vectorized``).

    ``client_update_batch`` must return, in order, what ``client_update`` would return for each
    ``(datas[k], rngs[k])`` (to float rounding).
    """

    def client_update_batch(
        self,
        model: Any,
        params: np.ndarray,
        datas: list[Any],
        rngs: list[np.random.Generator],
        round_index: int,
    ) -> list[ClientUpdate]: ...


@dataclass(frozen=True)
class CohortSampling:
    """How a round's clients are drawn: ``fixed`` (``size`` distinct clients, uniformly) or
    ``poisson`` (each client independently with probability ``size / population``)."""

    kind: str
    population: int
    size: int

    @property
    def rate(self) -> float:
        return self.size / self.population


def declared_engines(algorithm: Any) -> tuple[str, ...]:
    """The engines ``type(algorithm)`` declares in its own body (``("sequential",)`` if none)."""
    return tuple(vars(type(algorithm)).get("engines", ("sequential",)))
