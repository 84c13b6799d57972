"""Ray Train (``TorchTrainer``, DDP; gloo on CPU, NCCL on GPU) as the protocols use it: a
training loop runs on ``workers`` workers of ``cluster.worker`` resources and sends what the
driver must see (records, checkpoints, snapshots) through a queue as ``(kind, *args)`` items;
the driver hands each to its handler as it comes. Also the helpers the loops share: checkpoint
arrays of a model and its AdamW state, and sums over the workers."""

from __future__ import annotations

import contextlib
import os
import queue as queue_module
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import ray
import torch

from sim.errors import CohortError
from sim.runtime.workers import not_placed

START_TIMEOUT = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
STARTUP_ATTEMPTS = 3  # a fit whose workers failed to start (a node lost meanwhile): tries


def model_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's state as named numpy arrays (``model/<name>``)."""
    return {f"model/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def state_arrays(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Model and AdamW state as named numpy arrays (a checkpoint without pickles)."""
    arrays = model_arrays(model)
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            arrays[f"optimizer/{index}/{key}"] = torch.as_tensor(value).cpu().numpy()
    return arrays


def load_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, arrays: dict) -> None:
    model.load_state_dict(
        {k.removeprefix("model/"): torch.tensor(v) for k, v in arrays.items()
         if k.startswith("model/")}
    )  # fmt: skip
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in arrays.items():
        if name.startswith("optimizer/"):
            _, index, key = name.split("/")
            state.setdefault(int(index), {})[key] = torch.tensor(value)
    optimizer.load_state_dict(
        {"state": state, "param_groups": optimizer.state_dict()["param_groups"]}
    )


def all_reduce_sums(values: list[float], world: int) -> list[float]:
    """Sum ``values`` over the workers."""
    tensor = torch.tensor(values, dtype=torch.float64)
    if world > 1:
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


@contextlib.contextmanager
def train_environment(cluster: Any) -> Iterator[None]:
    """Ray Train's settings for one fit (read from the environment, which Ray Train hands from
    the driver to its controller), unless the user set them: its worker group waits for its
    resources ``cluster.placement_timeout_s``; on an embedded local Ray, no preemption watcher
    (no node of it is ever drained, and the watcher's start logs an error-level line, its
    constructor's arguments in the object store: ray-project/ray#53727)."""
    settings = {START_TIMEOUT: f"{cluster.placement_timeout_s:g}"}
    if cluster.mode == "local":
        settings[PREEMPTION_WATCHER] = "0"
    added = {k: v for k, v in settings.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class RayTrainer:
    """Runs ``loop`` (a ``train_loop_per_worker`` whose config gets a ``queue``) on Ray Train
    workers and calls ``handlers[kind](*args)`` for every item rank 0 puts on the queue."""

    def __init__(self, cluster: Any, workers: int, loop: Callable[[dict], None]) -> None:
        self.cluster, self.workers, self.loop = cluster, workers, loop

    def fit(self, config: dict, handlers: dict[str, Callable[..., None]]) -> None:
        from ray.util.queue import Queue

        worker = self.cluster.worker
        resources = {"CPU": worker.num_cpus, **worker.resources}
        if worker.num_gpus:
            resources["GPU"] = worker.num_gpus
        inbox = Queue(actor_options={"num_cpus": 0})
        try:
            with train_environment(self.cluster):  # read by the fit's thread as it starts
                timeout = float(os.environ[START_TIMEOUT])
                for _ in range(STARTUP_ATTEMPTS):
                    failure = self.attempt(config, handlers, inbox, resources)
                    kind = type(getattr(failure, "controller_failure", None)).__name__
                    if kind != "WorkerGroupStartupFailedError":  # Ray Train's internal classes
                        break
                    # the workers failed to start (a node lost meanwhile): nothing ran; again
        finally:
            ray.kill(inbox.actor)
        if failure is not None:
            if kind == "WorkerGroupStartupTimeoutError":
                what = f"{self.workers} Ray Train workers of {resources}"
                raise not_placed("worker", what, timeout) from None
            raise CohortError(f"training failed: {failure}") from failure

    def attempt(
        self,
        config: dict,
        handlers: dict[str, Callable[..., None]],
        inbox: Any,
        resources: dict[str, float],
    ) -> BaseException | None:
        """One ``TorchTrainer.fit`` in a thread, its queue's items handed to ``handlers`` here
        as they come; returns its error, if any."""
        from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        worker = self.cluster.worker
        trainer = TorchTrainer(
            self.loop,
            train_loop_config={**config, "queue": inbox},
            scaling_config=ScalingConfig(
                num_workers=self.workers,
                use_gpu=worker.num_gpus > 0,
                resources_per_worker=resources,
            ),
            run_config=RunConfig(
                storage_path=tempfile.mkdtemp(prefix="cohort-train-"),
                name=self.loop.__name__,
                logging_config=LoggingConfig(log_level="WARNING"),  # not every worker's start
                # Workers not placed within the start timeout: the fit fails (Ray Train would
                # otherwise try again for ever); a failed start is tried again in fit.
                failure_config=FailureConfig(controller_failure_limit=0),
            ),
        )
        failure: list[BaseException] = []

        def fit() -> None:
            try:
                trainer.fit()
            except BaseException as error:  # handed to the driver's thread below
                failure.append(error)

        thread = threading.Thread(target=fit, daemon=True)
        thread.start()
        while thread.is_alive() or not inbox.empty():
            try:
                kind, *args = inbox.get(timeout=0.2)
            except queue_module.Empty:
                continue
            handlers[kind](*args)
        thread.join()
        return failure[0] if failure else None
