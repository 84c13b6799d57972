"""The churn-aware retraining protocol (Jiang et al., "Churn reduction via distillation", ICLR
2022): a base model trained on a subset, then a new model trained on all the data.

1. A Ray task loads the pool env (features, labels and test set all known: this is supervised
   retraining) into the object store.
2. The base model (the ``learner``) is trained on ``base_fraction`` of the training rows, drawn
   from the seed, in a worker task.
3. A teacher actor (``cluster.teacher``) holds the base model and answers its class
   probabilities for blocks of ``block`` training indices.
4. The new model (the same learner, from its own seeded initialisation) is trained on all rows
   against the algorithm's targets (``algorithm=distill``: ``lam * g + (1 - lam) * y``, ...).
5. One record: both models' test accuracy and the churn between them (churn, good and bad churn,
   their ratio) on the test set.

The new model's initialisation and minibatch order depend only on the seed, not the algorithm, so
two algorithms' runs with one seed differ only by their targets (paired comparisons).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import ray

from sim import checks, seeding
from sim.errors import CohortError
from sim.interfaces.active import Learner, PoolData, PoolEnvironment
from sim.interfaces.protocol import Outcome, RunContext, Setup, unflatten
from sim.interfaces.retraining import RetrainingAlgorithm
from sim.protocols.retraining.metrics import churn_metrics
from sim.runtime.config import ClusterConfig
from sim.runtime.progress import progress_line
from sim.runtime.reservation import Reservation
from sim.runtime.workers import actor_device, wait_started
from sim.training.learner import expose, learner_layout

if TYPE_CHECKING:
    from sim.training.model import ClientModel

CURVES = ("test_accuracy", "churn")


def base_subset(seed: int, size: int, fraction: float) -> np.ndarray:
    """The base model's training rows: ``round(fraction * size)`` (at least 1), sorted."""
    count = max(1, int(round(fraction * size)))
    return np.sort(seeding.rng(seed, "base_subset").choice(size, count, replace=False))


def _load(env: PoolEnvironment) -> tuple[PoolData, int, int, np.ndarray]:
    """The pool, its number of training rows and of classes, and its test labels."""
    data = env.load_pool()
    return data, len(data.y), data.num_classes, data.test_y


def _predict(model: ClientModel, x: np.ndarray) -> np.ndarray:
    return expose(model, x).probabilities


def _train(
    data: PoolData,
    learner: Learner,
    rows: np.ndarray,
    targets: np.ndarray | None,
    seed: int,
    role: str,
    num_cpus: float,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Fit ``learner`` on ``data.x[rows]`` against ``targets`` ((n, C) weights; None: the rows'
    labels); returns its parameters, its test predictions, its last loss and the seconds."""
    tick = time.perf_counter()
    model, loss = learner.fit(
        data.x[rows],
        data.y[rows] if targets is None else targets,
        data.num_classes,
        seeding.rng(seed, role),
        seeding.torch_seed(seed, role, "init"),
        None,
        actor_device(num_cpus),
    )
    predictions = _predict(model, data.test_x).argmax(axis=1)
    return model.get_flat(), predictions, loss, time.perf_counter() - tick


def _train_new(
    data: PoolData,
    learner: Learner,
    algorithm: RetrainingAlgorithm,
    seed: int,
    num_cpus: float,
    *base_blocks: np.ndarray,
):
    base = np.concatenate(base_blocks)
    targets = np.asarray(algorithm.targets(base, data.y), np.float32)
    if targets.shape != base.shape:
        raise CohortError(
            f"algorithm {type(algorithm).__name__}: targets must have shape {base.shape} "
            f"(got {targets.shape})"
        )
    return _train(data, learner, np.arange(len(data.y)), targets, seed, "new_model", num_cpus)


load_task = ray.remote(num_returns=4)(_load)
train_task = ray.remote(num_returns=4)(_train)
train_new_task = ray.remote(num_returns=4)(_train_new)
layout_task = ray.remote(learner_layout)


@ray.remote
class BaseModel:
    """The teacher: the base model, answering its class probabilities for training rows."""

    def __init__(self, data: PoolData, learner: Learner, params: np.ndarray) -> None:
        from sim.training.model import ClientModel  # torch: in the actor, not the driver

        module = learner.build(data.x.shape[1], data.num_classes)
        self.model = ClientModel(module, actor_device(1))
        self.model.set_flat(params)
        self.x = data.x

    def soft_labels(self, indices: np.ndarray) -> np.ndarray:
        return _predict(self.model, self.x[indices])


@dataclass
class Retraining:
    """Base model on ``base_fraction`` of the training rows, new model on all of them, churn
    between the two on the test set. The teacher answers in blocks of ``block`` rows.
    ``base_fraction``'s default is ours, not the paper's."""

    resumable: ClassVar[tuple[str, ...]] = ()
    roles: ClassVar[tuple[str, ...]] = ("worker", "teacher")  # the cluster roles it places

    base_fraction: float = 0.1
    block: int = 8192

    def __post_init__(self) -> None:
        checks.in_interval(self, 0, 1, "base_fraction")
        checks.positive(self, "base_fraction")
        checks.at_least(self, 1, "block")

    def reservation(self, cluster: ClusterConfig, workers: int) -> Reservation:
        """One training task at a time and the base model's actor (the teacher)."""
        return Reservation({"worker": 1, "teacher": 1})

    def prepare(self, setup: Setup) -> RetrainingJob:
        env = setup.component(
            "env", PoolEnvironment, "a pool env (env=tabular, env=fashion_mnist_pool)", "retraining"
        )
        learner = setup.component("learner", Learner, "a learner (learner=mlp)", "retraining")
        algorithm = setup.component(
            "algorithm",
            RetrainingAlgorithm,
            "a retraining algorithm (algorithm=retrain, distill, anchor)",
            "retraining",
        )
        if setup.start is not None:
            raise CohortError("resume: a retraining run is one step; it has already ended")
        try:
            env.locate()
        except FileNotFoundError as error:
            raise CohortError(f"env: {error}") from None
        return RetrainingJob(self, env, learner, algorithm, setup.seed)


PROGRESS = (
    ("base_test_accuracy", "base_acc {:.4f}"),
    ("test_accuracy", "new_acc {:.4f}"),
    ("churn", "churn {:.4f}"),
    ("good_churn", "good {:.4f}"),
    ("bad_churn", "bad {:.4f}"),
)


@dataclass
class RetrainingJob:
    settings: Retraining
    env: PoolEnvironment
    learner: Learner
    algorithm: RetrainingAlgorithm
    seed: int

    def run(self, context: RunContext) -> Outcome:
        tick = time.perf_counter()
        worker = context.cluster.worker
        options = worker.ray_options()
        data, size, num_classes, test_y = load_task.options(**options).remote(self.env)
        try:
            size, num_classes = ray.get([size, num_classes])
        except ray.exceptions.RayTaskError as error:
            raise CohortError(f"env: the pool could not be loaded: {error.cause}") from None
        rows = base_subset(self.seed, size, self.settings.base_fraction)
        base_params, base_predictions, base_loss, base_time = train_task.options(**options).remote(
            data, self.learner, rows, None, self.seed, "base_model", worker.num_cpus
        )
        teacher = BaseModel.options(**context.cluster.teacher.ray_options()).remote(
            data, self.learner, base_params
        )
        wait_started([teacher], "teacher", context.cluster)
        blocks = [
            teacher.soft_labels.remote(chunk)
            for chunk in np.array_split(np.arange(size), -(-size // self.settings.block))
        ]
        params, predictions, loss, new_time = train_new_task.options(**options).remote(
            data, self.learner, self.algorithm, self.seed, worker.num_cpus, *blocks
        )
        context.begin([])
        test_y, base_predictions, predictions = ray.get([test_y, base_predictions, predictions])
        record: dict[str, Any] = {
            "round": 1,
            "train_rows": size,
            "base_rows": len(rows),
            "classes": num_classes,
            "base_test_accuracy": float(np.mean(base_predictions == test_y)),
            "test_accuracy": float(np.mean(predictions == test_y)),
            **churn_metrics(base_predictions, predictions, test_y),
            "base_train_loss": ray.get(base_loss),
            "train_loss": ray.get(loss),
            "base_train_time_s": ray.get(base_time),
            "train_time_s": ray.get(new_time),
        }
        record["round_time_s"] = time.perf_counter() - tick
        head = f"[{type(self.algorithm).__name__}]"
        context.record(record, progress_line(head, record, PROGRESS))
        params = ray.get(params)
        context.save({"params": params, "base_params": ray.get(base_params)}, 1, [record])
        steps = f"base on {len(rows)} rows, new on {size}"
        weights = unflatten(params, ray.get(layout_task.remote(self.learner, data)))
        return Outcome(params, [record], CURVES, x="round", steps=steps, weights=weights)
