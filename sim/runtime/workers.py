"""Worker actors: how many fit the cluster, the torch device and threads inside one, and a group
of them that outlives its members.

Calls are spread round-robin over the workers, or by their costs when given. A call whose worker
died (killed, crashed, or lost with its node) is re-run on a replacement started with the same
constructor, or, when the cluster no longer has room for one, on the remaining workers. The calls
must be deterministic functions of their arguments (the client tasks are: of seed, round and
clients), so a re-run gives the same result and a run with failures ends where a fault-free one
does.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from sim.errors import CohortError, ConfigError
from sim.runtime.config import ROLES, ClusterConfig, ResourceSpec
from sim.runtime.reservation import (
    add,
    capacity,
    fits,
    reservation_of,
    resources_of,
    why_never,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MAX_RERUNS = 3  # of one call: a worker that dies every time is a bug, not a fault

# The actors and tasks of each role that the job running in this process may place at once: set
# by a sweep's launcher for the job it runs (the job's reservation), None for a job that has the
# whole cluster. One job at a time per process.
_job_share: Mapping[str, int] | None = None


@contextmanager
def job_share(share: Mapping[str, int]) -> Iterator[None]:
    """Within the block, size every group of actors from ``share`` (role -> how many the job
    holds room for), not from the whole cluster's resources."""
    global _job_share
    before, _job_share = _job_share, dict(share)
    try:
        yield
    finally:
        _job_share = before


def balance(costs: Sequence[float], bins: int) -> list[int]:
    """The bin of each item: items by cost, largest first (ties: lower index), each into the bin
    with the least cost so far (ties: lower bin) -- Graham's longest-processing-time-first rule,
    whose largest bin is at most 4/3 of the best possible. Deterministic: a function of
    ``costs`` and ``bins`` alone."""
    loads = [(0.0, b) for b in range(bins)]
    owner = [0] * len(costs)
    for item in sorted(range(len(costs)), key=lambda k: (-costs[k], k)):
        load, b = heapq.heappop(loads)
        owner[item] = b
        heapq.heappush(loads, (load + costs[item], b))
    return owner


def worker_capacity(worker: ResourceSpec, role: str = "worker") -> int | None:
    """How many actors of ``worker``'s resources the cluster holds now, or the job's share of
    ``role`` when it runs in a sweep's reservation (:func:`job_share`); None: it asks for none."""
    if not resources_of(worker):
        return None
    if _job_share is not None:
        return _job_share.get(role, 0)
    return capacity(ray.cluster_resources(), worker)


def _resources(amounts: dict[str, float]) -> dict[str, float]:
    """The CPUs, GPUs and custom resources of ``amounts`` (memory and node tags left out)."""
    return {k: v for k, v in sorted(amounts.items()) if "memory" not in k and ":" not in k}


def check_roles(cluster: ClusterConfig, protocol: Any) -> None:
    """Fail, naming the role and what it asks for, unless some live node of the cluster can
    hold one actor (or task) of each of the protocol's roles, and, when each role's own count
    fits the cluster (else the protocol's check of that count names it), the cluster all that
    the run holds at once (its smallest reservation: one worker, each other role, its Ray Train
    workers): a request that can never be met would otherwise wait forever for a slot (Ray
    Train retries its worker group without end)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for role in getattr(protocol, "roles", ROLES):
        options = getattr(cluster, role).ray_options()
        if not any(fits(resources_of(getattr(cluster, role)), node) for node in nodes):
            have = "; ".join(
                ", ".join(f"{k} {v:g}" for k, v in _resources(n).items()) for n in nodes
            )
            raise CohortError(
                f"cluster.{role}: no node of the cluster can hold one {role} of {options} "
                f"(its nodes have: {have or 'nothing'})"
            )
    reservation = reservation_of(protocol, cluster, 1)
    groups = [[add(resources_of(getattr(cluster, role)), reservation.pinned.get(role, {}))] * n
              for role, n in reservation.counts.items()]  # fmt: skip
    groups.append(reservation.trained_resources(cluster))
    total = add(*nodes)
    if any(not fits(add(*group), total) for group in groups if group):
        return  # one role's count alone is too many: the protocol's own check names it
    why = why_never(reservation.bundles(cluster), reservation.trained_resources(cluster), nodes)
    if why is not None:
        raise CohortError(
            f"cluster: the run's roles fit the cluster one by one but not together: {why} "
            "(lower a role's resources, e.g. cluster.teacher.num_cpus, or add nodes)"
        )


def not_placed(role: str, what: str, timeout: float) -> CohortError:
    """The error for ``what`` (actors or workers of ``cluster.<role>``) not placed in time."""
    return CohortError(
        f"cluster.{role}: {what} were not placed and started within {timeout:g} s "
        f"(cluster.placement_timeout_s); free now: {_resources(ray.available_resources())}"
    )


def wait_started(actors: Sequence[Any], role: str, cluster: ClusterConfig) -> None:
    """Wait until every actor of ``role`` is placed and constructed; fail naming the role and
    its resources if some are not within ``cluster.placement_timeout_s`` (a request the cluster
    could meet but does not: its resources held by others, an autoscaler that never delivers;
    or a constructor that takes that long), or if one died while starting."""
    refs = [actor.__ray_ready__.remote() for actor in actors]
    timeout = cluster.placement_timeout_s
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    if pending:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        options = getattr(cluster, role).ray_options()
        raise not_placed(role, f"{len(pending)} of {len(refs)} {role} actors of {options}", timeout)
    try:
        ray.get(refs)
    except ray.exceptions.RayActorError as error:
        raise CohortError(f"cluster.{role}: an actor died while starting: {error}") from None


def group_size(
    worker: ResourceSpec,
    requested: int | None,
    max_useful: int,
    role: str = "worker",
    request_key: str = "cluster.num_workers",
) -> int:
    """How many actors of ``role`` (resources ``cluster.<role>``) to start: the request (the
    config's ``request_key``; checked to fit the cluster's resources, so no actor waits forever
    for a slot), else as many as fit, at most ``max_useful``."""
    capacity = worker_capacity(worker, role)
    size = max_useful if capacity is None else capacity
    where = "the job's reservation" if _job_share is not None else "the cluster's resources"
    if size < 1:
        raise CohortError(
            f"cluster.{role}: {where} ({_job_share or ray.cluster_resources()}) cannot fit one "
            f"{role} of {worker.ray_options()}"
        )
    if requested is not None:
        if requested > size:
            raise ConfigError(
                f"{request_key}: {requested} {role}s of {worker.ray_options()} do not fit "
                f"{where} (at most {size})"
            )
        return requested
    return min(size, max_useful)


def actor_device(num_cpus: float) -> torch.device:
    """Inside an actor: use as many torch threads as CPUs assigned, and the GPU Ray assigned.
    Outside Ray (a test, a notebook) no GPU is assigned: the CPU, and no Ray is started (asking
    Ray for its GPU ids would start one)."""
    import torch

    torch.set_num_threads(max(1, int(num_cpus)))
    if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU(s)
    return torch.device("cpu")


@dataclass
class Returned:
    """The value a :func:`logged` task yields last, after its lines."""

    value: Any


def logged(work: Callable[[Callable[[str], None]], Any]) -> Iterator[str | Returned]:
    """Inside a generator task (``num_returns="streaming"``): run ``work(log)`` in a thread,
    yield each line it logs as it comes, then its value; its exception is raised here. With
    :func:`follow` on the caller's side, a long task's progress reaches the caller's console
    (a sweep job's ``log.txt``) while it runs, not Ray's worker logs."""
    lines: queue.Queue[object] = queue.Queue()
    done, outcome = object(), {}

    def run() -> None:
        try:
            outcome["value"] = work(lines.put)
        except BaseException as error:  # raised again in the task's own thread
            outcome["error"] = error
        finally:
            lines.put(done)

    # A caller that cancels the task ends its process (force=True is the only cancel used).
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while (line := lines.get()) is not done:
        yield str(line)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    yield Returned(outcome["value"])


def follow(generator: Any, show: bool = True) -> Any:
    """The caller's side of :func:`logged`: print each line as it arrives (unless not
    ``show``); the task's value."""
    for ref in generator:
        item = ray.get(ref)
        if isinstance(item, Returned):
            return item.value
        if show:
            print(item, flush=True)
    raise CohortError("the task ended without returning its value")


class WorkerGroup:
    """``size`` actors from ``spawn()``; each has a ``placement()`` method returning its Ray
    node id and its torch device. With ``cluster``, their start is bounded (:func:`wait_started`).

    ``capacity()`` says how many workers the cluster holds now (None: no limit); ``restarts``
    counts the workers lost so far, ``placements`` the (node, device) of every worker started.
    """

    def __init__(
        self,
        spawn: Callable[[], Any],
        size: int,
        capacity: Callable[[], int | None],
        start_timeout_s: float = 60.0,
        cluster: ClusterConfig | None = None,
    ) -> None:
        self.spawn, self.capacity, self.start_timeout_s = spawn, capacity, start_timeout_s
        self.workers = [spawn() for _ in range(size)]
        self.restarts = 0
        if cluster is not None:
            wait_started(self.workers, "worker", cluster)
        try:
            self.placements = ray.get([worker.placement.remote() for worker in self.workers])
        except ray.exceptions.RayActorError as error:
            raise CohortError(f"client workers: one failed to start: {error}") from None

    @property
    def size(self) -> int:
        return len(self.workers)

    def summary(self) -> dict[str, Any]:
        """For the run's summary: how many nodes hosted workers, and the devices they used."""
        return {
            "worker_nodes": len({node for node, _ in self.placements}),
            "worker_devices": sorted({device for _, device in self.placements}),
        }

    def run(
        self,
        method: str,
        calls: Sequence[tuple],
        num_returns: int = 1,
        costs: Sequence[float] | None = None,
    ) -> list[tuple]:
        """``method(*calls[k])`` for every ``k``: on worker ``k % size``, or, given each call's
        ``costs``, spread so that the workers' totals are even (:func:`balance`); per call, in
        order, its first ``num_returns - 1`` results as object refs (left in the object store)
        and its last one fetched. Returns once every call has succeeded. A call that lost its
        worker runs again on worker ``slot % size`` of those left."""
        slots = list(range(len(calls))) if costs is None else balance(costs, self.size)
        submitted = [
            self._submit(slot, method, args, num_returns)
            for slot, args in zip(slots, calls, strict=True)
        ]
        results = []
        for k, args in enumerate(calls):
            reruns = 0
            while True:
                worker, refs = submitted[k]
                try:
                    value = ray.get(refs[-1])
                    break
                except ray.exceptions.RayActorError as error:
                    reruns += 1
                    if reruns > MAX_RERUNS:
                        raise CohortError(
                            f"client worker: {method} failed {reruns} times, each time with its "
                            f"worker dead; last: {error}"
                        ) from None
                    self._replace(worker)
                    submitted[k] = self._submit(slots[k], method, args, num_returns)
            results.append((*refs[:-1], value))
        return results

    def _submit(self, slot: int, method: str, args: tuple, num_returns: int) -> tuple[Any, list]:
        worker = self.workers[slot % len(self.workers)]
        refs = getattr(worker, method).options(num_returns=num_returns).remote(*args)
        return worker, refs if num_returns > 1 else [refs]

    def _replace(self, dead: Any) -> None:
        """Replace ``dead`` (once: its other failed calls find it already gone), or drop it when
        no replacement fits or starts in time."""
        index = next((i for i, worker in enumerate(self.workers) if worker is dead), None)
        if index is None:
            return
        self.restarts += 1
        ray.kill(dead, no_restart=True)  # it may only be unreachable: make sure it is gone
        capacity = self.capacity()
        if capacity is None or len(self.workers) - 1 < capacity:
            replacement = self.spawn()
            ready, _ = ray.wait([replacement.placement.remote()], timeout=self.start_timeout_s)
            if ready:
                log.warning("client worker %d died; replaced", index)
                self.workers[index] = replacement
                self.placements.append(ray.get(ready[0]))
                return
            ray.kill(replacement, no_restart=True)
        if len(self.workers) == 1:
            raise CohortError("client workers: the last one died and no replacement can start")
        log.warning("client worker %d died; no room for a replacement, going on without it", index)
        del self.workers[index]
