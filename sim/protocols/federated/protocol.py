"""The federated protocol (FedAvg, FedProx, FedPA, ...): a server actor, a group of client-worker
actors, and the round loop.

Each round: the cohort, a pure function of ``(seed, round)``, is cut into
``ceil(cohort / clients_per_task)`` tasks by client size (:func:`~.actors.split_tasks`), spread
over the workers by their cost; the workers run the algorithm's client updates and return one
pre-aggregated sum per task; the server adds them in task order and applies the algorithm's
server update; every ``eval_every`` rounds the global model is evaluated on the test set and on
the clients' own data. Results do not depend on the number of workers. The population lives once
in the object store.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import ray

from sim import checks, seeding
from sim.errors import CohortError, ConfigError
from sim.interfaces.federated import (
    ENGINES,
    Aggregator,
    CohortSampling,
    Environment,
    FederatedAlgorithm,
    FederatedData,
    ModelSpec,
    ServerState,
)
from sim.interfaces.protocol import Outcome, RunContext, Setup, unflatten
from sim.protocols.cadence import Cadence, Recorder
from sim.protocols.federated.actors import (
    ClientWorker,
    check_client_engine,
    evaluate,
    split_tasks,
    task_cost,
)
from sim.protocols.federated.attacks import ATTACKS, NO_ATTACK, Attack, byzantine_clients
from sim.protocols.federated.server import Server
from sim.runtime.config import ClusterConfig
from sim.runtime.progress import progress_line
from sim.runtime.reservation import HEAD_NODE_RESOURCE, Reservation
from sim.runtime.workers import WorkerGroup, group_size, wait_started, worker_capacity

SERVER_PIN = 0.001  # of the head node's marker resource: a thousand servers fit
CURVES = ("test_accuracy", "test_loss", "distance_to_optimum")
PROGRESS = (
    ("train_loss", "train_loss {:.4f}"),
    ("test_accuracy", "test_acc {:.4f}"),
    ("test_loss", "test_loss {:.4f}"),
    ("client_accuracy_mean", "client_acc {:.4f}"),
    ("epsilon", "eps {:.3g}"),
    ("clip", "clip {:.3g}"),
)
COUNTERS = (
    ("dropped_clients", "dropped {}"),
    ("byzantine_clients", "byzantine {}"),
    ("worker_restarts", "worker restarts {}"),
)
SAMPLINGS = ("fixed", "poisson")


@dataclass
class RoundSchedule:
    """Settings of a protocol that runs rounds: how many, and how often it evaluates and
    checkpoints (0: only at the end). A resumed run may raise ``rounds``."""

    resumable: ClassVar[tuple[str, ...]] = ("rounds",)
    roles: ClassVar[tuple[str, ...]] = ("worker", "server")  # the cluster roles it places

    rounds: int = 60
    eval_every: int = 5
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "rounds", "eval_every")
        checks.at_least(self, 0, "checkpoint_every")

    def reservation(self, cluster: ClusterConfig, workers: int) -> Reservation:
        """``workers`` client workers (at most one per task of a round) and the server, whose
        bundle is pinned to the head node as the server is (see ``RoundJob.run``)."""
        return Reservation(
            {"worker": min(workers, self.tasks_per_round()), "server": 1},
            pinned={"server": {HEAD_NODE_RESOURCE: SERVER_PIN}},
        )

    def tasks_per_round(self) -> int:
        """The most tasks a round may have (the pooled data: one)."""
        return 1


def federated_components(
    setup: Setup, protocol: str
) -> tuple[Environment, FederatedAlgorithm, ModelSpec]:
    """The env, algorithm and model of a protocol that trains a federated algorithm."""
    env = setup.component(
        "env", Environment, "a federated population (env=synthetic, fashion_mnist, ...)", protocol
    )
    algorithm = setup.component(
        "algorithm", FederatedAlgorithm, "a federated algorithm (algorithm=fedavg, ...)", protocol
    )
    model = setup.component("model", ModelSpec, "a model (model=logistic, mlp, ...)", protocol)
    return env, algorithm, model


def load_population(env: Environment, seed: int) -> FederatedData:
    """The env's population, drawn from the run's ``env`` stream; a loading failure is one line."""
    try:
        return env.load(seeding.rng(seed, "env"))
    except (FileNotFoundError, ValueError) as error:
        raise CohortError(f"env: {error}") from None


@dataclass
class Federated(RoundSchedule):
    """Cross-device federated learning: ``clients_per_round`` clients a round (None: all of
    them), drawn by ``cohort_sampling`` (``fixed``: that many; ``poisson``: each client with
    probability ``clients_per_round / population``), in ``ceil(clients_per_round /
    clients_per_task)`` tasks cut by client size; ``client_engine`` sequential or vectorized;
    client accuracy measured on ``eval_clients`` clients (None: all). ``byzantine_fraction`` of
    the clients send ``attack`` (:mod:`~sim.protocols.federated.attacks`) of size
    ``attack_scale``."""

    clients_per_round: int | None = 10
    clients_per_task: int = 5  # sets the tasks a round; they never depend on #workers
    client_engine: str = "sequential"
    eval_clients: int | None = None
    cohort_sampling: str = "fixed"
    byzantine_fraction: float = 0.0
    attack: str = "sign_flip"
    attack_scale: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.at_least(self, 1, "clients_per_round", "eval_clients", optional=True)
        checks.at_least(self, 1, "clients_per_task")
        checks.one_of(self, "client_engine", ENGINES)
        checks.one_of(self, "cohort_sampling", SAMPLINGS)
        checks.in_interval(self, 0.0, 1.0, "byzantine_fraction")
        checks.one_of(self, "attack", ATTACKS)
        checks.at_least(self, 0.0, "attack_scale")
        if self.cohort_sampling == "poisson" and self.clients_per_round is None:
            raise ValueError("cohort_sampling: poisson needs clients_per_round (got null)")

    def attackers(self, setup: Setup, data: FederatedData) -> Attack:
        """The run's Byzantine clients and their attack (none: ``byzantine_fraction`` 0)."""
        if self.byzantine_fraction == 0:
            return NO_ATTACK
        if self.attack == "label_flip" and data.task != "classification":
            raise ConfigError(
                f"protocol.attack: label_flip needs a classification env (got {data.task})"
            )
        clients = byzantine_clients(setup.seed, data.num_clients, self.byzantine_fraction)
        return Attack(self.attack, self.attack_scale, clients)

    def tasks_per_round(self) -> int:
        if self.clients_per_round is None:
            return 2**31  # every client: the population's size is known only once loaded
        return math.ceil(self.clients_per_round / self.clients_per_task)

    def prepare(self, setup: Setup) -> RoundJob:
        env, algorithm, model = federated_components(setup, "federated")
        check_client_engine(self.client_engine, algorithm)
        data = load_population(env, setup.seed)
        for name in ("clients_per_round", "eval_clients"):
            if (getattr(self, name) or 0) > data.num_clients:
                raise ConfigError(
                    f"protocol.{name}: must be <= the population of {data.num_clients} clients "
                    f"(got {getattr(self, name)})"
                )
        eval_clients = np.arange(data.num_clients)
        if self.eval_clients is not None:
            chosen = seeding.rng(setup.seed, "eval_clients").choice(
                data.num_clients, self.eval_clients, replace=False
            )
            eval_clients = np.sort(chosen)
        size = self.clients_per_round or data.num_clients
        sampling = CohortSampling(self.cohort_sampling, data.num_clients, size)
        aggregator = setup.component(
            "aggregator", Aggregator, "an aggregator (aggregator=mean, median, ...)", "federated"
        )
        attack = self.attackers(setup, data)
        check_aggregation(algorithm, aggregator, sampling, attack)
        return RoundJob.start(
            self,
            setup,
            data,
            model,
            algorithm,
            sampling=sampling,
            clients_per_task=self.clients_per_task,
            engine=self.client_engine,
            eval_clients=eval_clients,
            aggregator=aggregator,
            attack=attack,
        )


def check_aggregation(
    algorithm: FederatedAlgorithm, aggregator: Aggregator, sampling: CohortSampling, attack: Attack
) -> None:
    """Refuse an algorithm that aggregates on its own (DP-FedAvg's noised sum) with an
    aggregator that needs every client's update or with attackers (their updates would skip
    the clipping that bounds every contribution), and a cohort the algorithm or the aggregator
    cannot take."""
    if hasattr(algorithm, "server_aggregate") and aggregator.per_client:
        raise ConfigError(
            f"aggregator: {type(algorithm).__name__} adds its noise to the clients' sum and "
            f"takes aggregator=mean only (got {type(aggregator).__name__})"
        )
    if hasattr(algorithm, "server_aggregate") and attack.clients.size:
        raise ConfigError(
            f"protocol.byzantine_fraction: {type(algorithm).__name__} bounds every client's "
            "contribution by its clipping, which simulated attackers would bypass; use 0"
        )
    for group, component in (("algorithm", algorithm), ("aggregator", aggregator)):
        check = getattr(component, "check_sampling", None)
        try:
            if check is not None:
                check(sampling)
        except ValueError as error:
            raise ConfigError(f"{group}.{error}") from None


@dataclass
class RoundJob:
    """The round loop of a federated algorithm on a population, ready to run."""

    schedule: RoundSchedule
    data: FederatedData
    model_spec: ModelSpec
    algorithm: FederatedAlgorithm
    seed: int
    state: ServerState | None  # None: fresh parameters, made by the first worker
    start_round: int
    history: list[dict[str, Any]]
    sampling: CohortSampling
    clients_per_task: int
    engine: str = "sequential"
    eval_clients: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    aggregator: Aggregator | None = None  # None: the weighted mean
    attack: Attack = NO_ATTACK

    @classmethod
    def start(
        cls,
        schedule: RoundSchedule,
        setup: Setup,
        data: FederatedData,
        model_spec: ModelSpec,
        algorithm: FederatedAlgorithm,
        **loop: Any,
    ) -> RoundJob:
        """The job from the server state of ``setup.start``, or (``state`` None) from fresh
        parameters that the first worker draws from the run's ``init`` stream."""
        if setup.start is not None:
            arrays, meta = setup.start
            opt_state = {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}
            state, start_round = ServerState(arrays["params"], opt_state), meta["round"]
            if start_round >= schedule.rounds:
                raise CohortError(
                    f"resume: the checkpoint is already at round {start_round} of "
                    f"{schedule.rounds}; raise protocol.rounds to continue"
                )
            history = meta["history"]
        else:
            check = getattr(model_spec, "check", None)  # a spec's own torch-free check
            try:
                if check is not None:
                    check(data.input_shape, data.num_classes)
            except ValueError as error:
                raise ConfigError(f"model: {error}") from None
            state, start_round, history = None, 0, []
        return cls(
            schedule=schedule,
            data=data,
            model_spec=model_spec,
            algorithm=algorithm,
            seed=setup.seed,
            state=state,
            start_round=start_round,
            history=history,
            **loop,
        )

    def run(self, context: RunContext) -> Outcome:
        server, group = self.start_actors(context.cluster)
        schedule = self.schedule
        cadence = Cadence(schedule.rounds, schedule.eval_every, schedule.checkpoint_every)
        recorder = Recorder(context, list(self.history), self.progress_line, cadence)
        context.begin(recorder.history)  # only now: every check that can refuse the run has passed
        params_ref = server.params.remote()  # the global parameters the next round starts from
        for round_index in range(self.start_round + 1, schedule.rounds + 1):
            tick = time.perf_counter()
            restarts = group.restarts
            record = self.train_round(round_index, group, server, params_ref)
            params_ref = server.params.remote()  # this round's result: evaluated, trained from
            if cadence.evaluates(round_index):
                record.update(evaluate(group, params_ref, self.data, self.eval_clients))
            record["worker_restarts"] = group.restarts - restarts
            if spent := getattr(self.algorithm, "privacy_spent", None):
                record.update(spent(round_index, self.sampling, cadence.evaluates(round_index)))
            if self.data.optimum is not None:
                distance = np.linalg.norm(ray.get(params_ref) - self.data.optimum)
                record["distance_to_optimum"] = float(distance)
            record["round_time_s"] = time.perf_counter() - tick
            recorder.step(round_index, record, lambda: self.checkpoint(server))
        assert self.state is not None  # the last round checkpoints
        [(layout,)] = group.run("layout", [()])
        return Outcome(
            self.state.params,
            recorder.history,
            CURVES,
            x="round",
            steps=f"{schedule.rounds} rounds",
            summary=group.summary(),
            weights=unflatten(self.state.params, layout),
        )

    def start_actors(self, cluster: ClusterConfig) -> tuple[Any, WorkerGroup]:
        """The server (with the initial or resumed state) and the client workers, started."""
        tasks_per_round = math.ceil(self.sampling.size / self.clients_per_task)
        num_workers = group_size(cluster.worker, cluster.num_workers, tasks_per_round)
        # The population once, in the object store: from here on the driver reads it there too
        # (zero-copy views) and lets its own copy go; not through Ray Client, where a get copies.
        data_ref = ray.put(self.data)
        if not ray.util.client.ray.is_connected():
            self.data = ray.get(data_ref)

        def spawn() -> Any:
            return ClientWorker.options(**cluster.worker.ray_options()).remote(
                data_ref,
                self.model_spec,
                self.algorithm,
                self.seed,
                cluster.worker.num_cpus,
                self.engine,
                self.attack,
                self.aggregator is not None and self.aggregator.per_client,
            )

        # The server starts first, beside the workers (it imports no torch: it is up first).
        # The server's state lives only in its actor: pin it to the head node (losing the head
        # loses the cluster anyway), so that losing another node loses client workers only.
        # (The driver's node is not a safe choice: on one machine, a driver may attach to any.)
        options = cluster.server.ray_options()
        options["resources"] = {**options.get("resources", {}), HEAD_NODE_RESOURCE: SERVER_PIN}
        server = Server.options(**options).remote(
            self.algorithm, self.state, self.aggregator, self.seed, float(self.sampling.size)
        )
        group = WorkerGroup(
            spawn, num_workers, lambda: worker_capacity(cluster.worker), cluster=cluster
        )
        wait_started([server], "server", cluster)
        if self.state is None:
            torch_seed = seeding.torch_seed(self.seed, "init")
            [(params,)] = group.run("initial_params", [(torch_seed,)])
            ray.get(server.set_params.remote(params))
        return server, group

    def train_round(
        self, round_index: int, group: WorkerGroup, server: Any, params_ref: Any
    ) -> dict[str, Any]:
        """One round: the cohort's clients train from ``params_ref`` on the workers, the server
        applies their summed updates; the round's record of the clients' metrics."""
        sizes = self.data.client_sizes()
        cohort = sample_cohort(self.seed, round_index, self.sampling)
        tasks = split_tasks(cohort, sizes, self.clients_per_task, self.engine)
        settings = server.client_settings.remote() if self.adapts_clients() else None
        calls = [(params_ref, task, round_index, settings) for task in tasks]
        costs = [task_cost(sizes, task, self.engine) for task in tasks]
        outputs = group.run("run", calls, num_returns=2, costs=costs)
        applied = server.apply.remote(round_index, *(task_sum for task_sum, _ in outputs))
        record = round_record(round_index, [m for _, metrics in outputs for m in metrics])
        if self.attack.clients.size:
            record["byzantine_clients"] = sum(m["byzantine"] for _, ms in outputs for m in ms)
        if settings is not None:
            record.update(ray.get(settings))
        ray.get(applied)
        return record

    def adapts_clients(self) -> bool:
        """Whether the clients take fields of the algorithm from the server state each round."""
        return hasattr(self.algorithm, "client_settings")

    def checkpoint(self, server: Any) -> dict[str, np.ndarray]:
        """The server's state (kept as ``self.state``) as checkpoint arrays."""
        self.state = ray.get(server.get_state.remote())
        opt = {f"opt/{k}": v for k, v in self.state.opt_state.items()}
        return {"params": self.state.params, **opt}

    def progress_line(self, record: dict[str, Any]) -> str:
        rounds = self.schedule.rounds
        head = f"[round {record['round']:>{len(str(rounds))}}/{rounds}]"
        return progress_line(head, record, PROGRESS, COUNTERS)


def sample_cohort(seed: int, round_index: int, sampling: CohortSampling) -> np.ndarray:
    """The round's clients, sorted: ``sampling.size`` distinct ones (``fixed``), or each client
    with probability ``sampling.rate`` (``poisson``; possibly none), from (seed, round)."""
    if sampling.kind == "poisson":
        draws = seeding.rng(seed, "cohort", round_index).random(sampling.population)
        return np.flatnonzero(draws < sampling.rate)
    return seeding.sample_cohort(seed, round_index, sampling.population, sampling.size)


def round_record(round_index: int, client_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """A round's record: clients, dropped clients, examples, and each client metric's mean."""
    kept = [m for m in client_metrics if not m["dropped"]]
    record: dict[str, Any] = {
        "round": round_index,
        "clients": len(client_metrics),
        "dropped_clients": len(client_metrics) - len(kept),
        "examples": int(sum(m["num_examples"] for m in kept)),
    }
    names = sorted(
        {k for m in kept for k in m} - {"client", "num_examples", "dropped", "byzantine"}
    )
    for name in names:
        record[name] = float(np.mean([m[name] for m in kept if name in m]))
    return record
