"""The federated protocol's client workers and their work: tasks of virtual clients
(pre-aggregated) and evaluation blocks. The server is :mod:`sim.protocols.federated.server`.

torch (:mod:`sim.training.model`) is imported inside the workers' code only: the driver imports
this module to create the workers, and never trains.

Each round the cohort is cut into tasks by client size (:func:`split_tasks`); a worker returns,
per task, the weighted sum of its clients' deltas (in client-id order) and their metrics, and the
server adds the task sums in task order. The cut does not depend on the number of workers, so
neither do the numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import ray

from sim import seeding
from sim.errors import ConfigError
from sim.interfaces.federated import (
    ENGINES,
    BatchedAlgorithm,
    ClientUpdate,
    FederatedAlgorithm,
    FederatedData,
    ModelSpec,
    declared_engines,
)
from sim.protocols.federated.attacks import NO_ATTACK, Attack, attacked_delta, flip_labels
from sim.protocols.federated.server import TaskResult
from sim.runtime.workers import WorkerGroup, actor_device, balance

if TYPE_CHECKING:
    from sim.training.model import ClientData, ClientModel

log = logging.getLogger(__name__)


def check_client_engine(engine: str, algorithm: Any = None) -> None:
    """Fail, naming ``client_engine``, on an unknown engine, or one that ``algorithm`` (when
    given) does not declare in its ``engines``."""
    if engine not in ENGINES:
        raise ConfigError(f"client_engine: must be one of {ENGINES} (got {engine!r})")
    if algorithm is not None and engine not in declared_engines(algorithm):
        raise ConfigError(
            f"client_engine: {type(algorithm).__name__} declares engines "
            f"{declared_engines(algorithm)}, not {engine!r} (a class declares "
            "`engines = (...)` in its own body); use client_engine=sequential"
        )


def split_tasks(
    cohort: np.ndarray, sizes: np.ndarray, clients_per_task: int, engine: str = "sequential"
) -> list[np.ndarray]:
    """The round's tasks: ``ceil(len(cohort) / clients_per_task)`` of them (fewer if clients
    with no examples would leave some empty), each listing its clients in id order. A function
    of the cohort and the clients' ``sizes`` (examples) alone, never of the workers, so the task
    sums and their fixed-order total are too.

    ``sequential``: tasks of about equal examples (:func:`~sim.runtime.workers.balance` over the
    clients' sizes), so that no task sets the round's time. ``vectorized``: the clients sorted
    by size (ties: id), cut into consecutive tasks of ``clients_per_task``: a task pads its
    clients to its largest one, so clients of similar size waste the least.
    """
    num_tasks = -(-len(cohort) // clients_per_task)
    cohort_sizes = sizes[cohort]
    if engine == "vectorized":
        by_size = cohort[np.lexsort((cohort, cohort_sizes))]
        tasks = [by_size[i : i + clients_per_task] for i in range(0, len(cohort), clients_per_task)]
    else:
        owner = np.array(balance(cohort_sizes.tolist(), num_tasks))
        tasks = [cohort[owner == t] for t in range(num_tasks)]
    return [np.sort(task) for task in tasks if len(task)]


def task_cost(sizes: np.ndarray, task: np.ndarray, engine: str) -> float:
    """A task's work, in padded examples: its clients' examples (``sequential``), or its clients
    times its largest one (``vectorized``: every client is padded to it)."""
    task_sizes = sizes[task]
    if engine == "vectorized":
        return float(len(task) * task_sizes.max(initial=0))
    return float(task_sizes.sum())


def client_datas(
    model: ClientModel, data: FederatedData, clients: np.ndarray, attack: Attack
) -> list[ClientData]:
    """The clients' examples on the model's device; a ``label_flip`` attacker's labels
    flipped."""
    from sim.training.model import ClientData

    datas = []
    for client in clients:
        client_data = ClientData.gather(data.x, data.y, data.client_indices(client), model.device)
        if attack.kind == "label_flip" and attack.involves(client):
            client_data = replace(client_data, y=flip_labels(client_data.y, data.num_classes))
        datas.append(client_data)
    return datas


def run_task(
    algorithm: FederatedAlgorithm,
    model: ClientModel,
    data: FederatedData,
    params: np.ndarray,
    clients: np.ndarray,
    seed: int,
    round_index: int,
    engine: str = "sequential",
    attack: Attack = NO_ATTACK,
    per_client: bool = False,
) -> tuple[TaskResult, list[dict[str, Any]]]:
    """Client updates for ``clients`` in order, pre-aggregated (and each kept, if
    ``per_client``); non-finite deltas are dropped; ``attack``'s clients send their attack.

    ``engine`` ``"sequential"`` calls ``client_update`` client by client, ``"vectorized"`` calls
    ``client_update_batch`` once for the task; the rest is the same for both.
    """
    check_client_engine(engine, algorithm)
    datas = client_datas(model, data, clients, attack)
    rngs = [seeding.rng(seed, "client", round_index, int(client)) for client in clients]
    updates: Iterable[ClientUpdate]
    if engine == "vectorized":
        batched = cast(BatchedAlgorithm, algorithm)  # checked above
        updates = batched.client_update_batch(model, params, datas, rngs, round_index)
    else:  # one at a time, as they are consumed
        updates = (
            algorithm.client_update(model, params, client_data, rng, round_index)
            for client_data, rng in zip(datas, rngs, strict=True)
        )
    result = TaskResult(np.zeros(params.shape, np.float64), 0.0)
    kept: list[ClientUpdate] = []
    metrics = []
    for client, client_data, update in zip(clients, datas, updates, strict=True):
        byzantine = attack.involves(client)
        if byzantine:
            rng = seeding.rng(seed, "attack", round_index, int(client))
            update = replace(
                update, delta=attacked_delta(attack.kind, update.delta, attack.scale, rng)
            )
        finite = bool(np.isfinite(update.delta).all()) and np.isfinite(update.weight)
        if finite:
            result.weighted_sum += update.weight * update.delta.astype(np.float64)
            result.weight += update.weight
            for name, value in update.metrics.items():
                result.metric_sums[name] = result.metric_sums.get(name, 0.0) + float(value)
            kept.append(update)
        else:
            log.warning(
                "round %d: client %d sent a non-finite update; dropped", round_index, client
            )
        metrics.append(
            {
                "client": int(client),
                "num_examples": len(client_data),
                "dropped": not finite,
                "byzantine": byzantine,
                **update.metrics,
            }
        )
    result.count = len(kept)
    if per_client:
        result.deltas = (
            np.stack([u.delta for u in kept]) if kept else np.zeros((0, len(params)), np.float32)
        )
    return result, metrics


EVAL_BLOCK = 4096  # test examples per evaluation task: fixed, so results ignore the workers


def split_range(stop: int, block: int) -> list[tuple[int, int]]:
    """``[0, stop)`` cut into consecutive ``(start, stop)`` blocks of ``block`` (last shorter)."""
    return [(start, min(start + block, stop)) for start in range(0, stop, block)]


@ray.remote
class ClientWorker:
    """Runs tasks of virtual clients and evaluation blocks; the population's data is read
    zero-copy from the object store."""

    def __init__(
        self,
        data: FederatedData,
        model_spec: ModelSpec,
        algorithm: FederatedAlgorithm,
        seed: int,
        num_cpus: float,
        engine: str = "sequential",
        attack: Attack = NO_ATTACK,
        per_client: bool = False,
    ) -> None:
        from sim.training.model import ClientModel

        device = actor_device(num_cpus)
        self.data, self.algorithm, self.seed, self.engine = data, algorithm, seed, engine
        self.attack, self.per_client = attack, per_client
        self.model_spec = model_spec
        self.model = ClientModel(self.build(), device, data.task)

    def build(self) -> Any:
        """A fresh module of the model spec for this population (torch's default init)."""
        return self.model_spec.build(self.data.input_shape, self.data.num_classes)

    def initial_params(self, torch_seed: int) -> np.ndarray:
        """The run's initial flat parameters, drawn with ``torch_seed`` (the driver imports no
        torch: the first worker makes them)."""
        from sim.training.model import initial_params

        return initial_params(self.build, torch_seed)

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """The model's parameter names and shapes, in the flat vector's order."""
        from sim.training.model import layout

        return layout(self.model.module)

    def placement(self) -> tuple[str, str]:
        """The Ray node this worker runs on and its torch device (the group also waits on this
        call to see the worker up)."""
        return ray.get_runtime_context().get_node_id(), str(self.model.device)

    @ray.method(num_returns=2)
    def run(
        self,
        params: np.ndarray,
        clients: np.ndarray,
        round_index: int,
        settings: dict[str, float] | None = None,
    ):
        """A task's client updates; ``settings``: fields of the algorithm that the server state
        sets this round (``Server.client_settings``: an adaptive clip)."""
        algorithm = replace(self.algorithm, **settings) if settings else self.algorithm
        return run_task(
            algorithm,
            self.model,
            self.data,
            params,
            clients,
            self.seed,
            round_index,
            self.engine,
            self.attack,
            self.per_client,
        )

    def evaluate_test(self, params: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, ...]:
        """Per-example loss and correctness on test examples ``[start, stop)``."""
        from sim.training.model import per_example_eval

        self.model.set_flat(params)
        test_x, test_y = self.data.test_x[start:stop], self.data.test_y[start:stop]
        return per_example_eval(self.model, test_x, test_y)

    def evaluate_clients(self, params: np.ndarray, clients: np.ndarray) -> np.ndarray:
        """Accuracy of the global model on each client's own (training) data."""
        from sim.training.model import per_example_eval

        self.model.set_flat(params)
        accuracy = np.empty(len(clients))
        for i, client in enumerate(clients):
            rows = np.sort(self.data.client_indices(client))
            x, y = self.data.x[rows], self.data.y[rows]
            _, correct = per_example_eval(self.model, x, y)
            accuracy[i] = correct.mean() if len(correct) else np.nan
        return accuracy


def evaluate(
    group: WorkerGroup, params_ref: Any, data: FederatedData, clients: np.ndarray
) -> dict[str, float]:
    """Test loss (and accuracy; none without test examples), and mean per-client accuracy over
    ``clients`` (none: not measured), in blocks across the workers.

        Test blocks have a fixed size and per-client results are per client, all concatenated in
        order, so the numbers do not depend on how many workers there are.
    """
    metrics: dict[str, float] = {}
    if len(data.test_y):  # an env may hold no test examples (env.test_fraction=0)
        blocks = split_range(len(data.test_y), EVAL_BLOCK)
        tests = group.run("evaluate_test", [(params_ref, start, stop) for start, stop in blocks])
        losses, correct = (
            np.concatenate(parts) for parts in zip(*(t for (t,) in tests), strict=True)
        )
        if data.task == "classification":
            metrics["test_accuracy"] = float(correct.mean())
        metrics["test_loss"] = float(losses.mean())
    if data.task != "classification":
        return metrics
    if len(clients):
        per_worker = -(-len(clients) // group.size)
        calls = [(params_ref, clients[a:b]) for a, b in split_range(len(clients), per_worker)]
        per_client = np.concatenate([a for (a,) in group.run("evaluate_clients", calls)])
        metrics["client_accuracy_mean"] = float(np.nanmean(per_client))
    return metrics
