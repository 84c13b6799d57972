"""A Hydra multirun's jobs side by side on Ray: the engine of ``hydra/launcher=cohort``.

Every job's config is composed and checked, and its reservation computed
(:mod:`sim.runtime.reservation`), before it starts, in a thread that runs beside Ray's start and
ahead of the jobs (about 0.1 s a job); a job whose config is refused, or that no node of the
cluster could hold, is reported at once, recorded as failed, and the others go on. In the sweep's
order, a job starts once the jobs in flight leave room for it (and fewer than ``max_concurrent``
run): its
placement group is created, and the job runs as a Ray task inside it, its actors and tasks
captured by the group (gang scheduling: a job never waits for another's resources). The task
runs Hydra's ``run_job`` with the app's task function (:func:`sim.runtime.run.hydra_task`) and
writes the job's console output to ``log.txt`` in its folder.

A job whose own process or node is lost, or that fails with one of Ray's system errors (an
actor, object or node lost), is retried from its last checkpoint (``max_retries`` times); a job
that raises anything else is failed: its one-line error goes to the sweep's ``sweep.json`` and
the table printed at the end, and the sweep goes on. Ctrl-C cancels the jobs in flight (their
checkpoints stay: ``resume=true`` with the same ``hydra.sweep.dir`` continues them, and skips
the jobs that finished).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import queue
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sim.errors import CohortError, one_line
from sim.runtime.config import (
    COMPONENTS,
    ClusterConfig,
    build_component,
    check_run_config,
)
from sim.runtime.outputs import CONFIG, LOG, SUMMARY
from sim.runtime.reservation import (
    Reservation,
    Resources,
    add,
    capacity,
    fits,
    reservation_of,
    why_never,
    worker_share,
)
from sim.runtime.workers import job_share

RECORD = "sweep.json"  # the sweep's record of every job, in the sweep's folder
# Ray's errors that mean the machinery failed, not the job's code: retried from the checkpoint.
FAULTS = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.OwnerDiedError,
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.RaySystemError,
)
failed_jobs: list[int] = []  # the jobs of this process's sweeps that failed (the exit status)


@dataclass
class Settings:
    """``hydra.launcher``: at most ``max_concurrent`` jobs in flight (None: as many as fit);
    ``workers_per_job`` workers each (None: the cluster's workers split evenly among the jobs in
    flight; a job's own ``cluster.num_workers`` comes first); ``max_retries`` per job after an
    infrastructure fault; a live display (``progress``; None: when stdout is a terminal)."""

    max_concurrent: int | None = None
    workers_per_job: int | None = None
    max_retries: int = 2
    progress: bool | None = None

    def __post_init__(self) -> None:
        for name in ("max_concurrent", "workers_per_job"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise CohortError(f"hydra.launcher.{name}: must be >= 1 or null (got {value})")
        if self.max_retries < 0:
            raise CohortError(f"hydra.launcher.max_retries: must be >= 0 (got {self.max_retries})")


@dataclass
class Job:
    """One job of the sweep: its config, what it holds while it runs, and how it went."""

    index: int
    overrides: list[str]
    folder: Path
    config: DictConfig | None = None
    bundles: list[Resources] = field(default_factory=list)
    trained: list[Resources] = field(default_factory=list)
    share: dict[str, int] = field(default_factory=dict)
    status: str = "queued"  # queued, running, done, finished_before, failed, interrupted
    error: str | None = None
    attempts: int = 0
    value: Any = None
    node: str | None = None
    node_id: str | None = None
    bundle_nodes: list[str] = field(default_factory=list)
    submitted: float = 0.0  # Unix time of the last attempt's submission
    wall_s: float = 0.0
    overhead_s: float = 0.0  # from submitting to the job's start, and from its end to collecting
    span: tuple[float, float] | None = None  # the last attempt's start and end (Unix time)

    def total(self) -> Resources:
        return add(*self.bundles, *self.trained)

    def record(self) -> dict[str, Any]:
        return {
            "job": self.index,
            "overrides": self.overrides,
            "status": self.status,
            "error": self.error,
            "attempts": self.attempts,
            "node": self.node,
            "node_id": self.node_id,
            "bundle_nodes": self.bundle_nodes,
            "reservation": {"bundles": self.bundles, "ray_train": self.trained},
            "wall_s": round(self.wall_s, 2),
            "overhead_s": round(self.overhead_s, 2),
            "span": self.span,
        }


def cluster_nodes() -> list[Resources]:
    """The resources of every live node (CPUs, GPUs, custom; not memory or node tags)."""
    return [
        {k: v for k, v in node["Resources"].items() if "memory" not in k and "_group_" not in k}
        for node in ray.nodes()
        if node.get("Alive")
    ]


def compose_job(loader: Any, base: DictConfig, job: Job, sweep_dir: Path) -> tuple | None:
    """The job's config composed and checked, and its protocol and cluster config built; None
    if it is refused (the job is then marked failed, with the reason). No Ray needed."""
    try:
        config = loader.load_sweep_config(base, list(job.overrides))
        with open_dict(config):
            config.hydra.job.id = job.index
            config.hydra.job.num = job.index
            config.hydra.sweep.dir = str(sweep_dir)
        job.folder = sweep_dir / str(config.hydra.sweep.subdir)
        check_run_config(config)
        protocol = build_component("protocol", config.protocol)
        for group in COMPONENTS:
            if config[group] is not None:
                build_component(group, config[group])
        cluster = OmegaConf.to_object(config.cluster)
    except Exception as error:  # a refused job: recorded, never the end of the sweep
        job.status, job.error = "failed", one_line(error)
        return None
    job.config = config
    return protocol, cluster


def compose_all(
    loader: Any, base: DictConfig, jobs: list[Job], sweep_dir: Path, inbox: queue.Queue
) -> None:
    """Compose the jobs in order (in a thread), handing each to ``inbox`` as ``(job, protocol,
    cluster)`` (``protocol`` None: refused); then None."""
    try:
        for job in jobs:
            inbox.put((job, *(compose_job(loader, base, job, sweep_dir) or (None, None))))
    finally:
        inbox.put(None)


def reserve(
    job: Job,
    protocol: Any,
    cluster: ClusterConfig,
    settings: Settings,
    nodes: list[Resources],
    in_flight: int,
) -> None:
    """The job's reservation on a cluster of ``nodes`` shared by ``in_flight`` jobs; a job no
    node could ever hold is marked failed, with the reason."""
    workers = cluster.num_workers or settings.workers_per_job
    if workers is None:
        workers = worker_share(capacity(add(*nodes), cluster.worker), in_flight)
    reservation: Reservation = reservation_of(protocol, cluster, workers)
    job.share = reservation.group_sizes()
    job.bundles = reservation.bundles(cluster)
    job.trained = reservation.trained_resources(cluster)
    refused = why_never(job.bundles, job.trained, nodes)
    if refused is not None:
        job.status, job.error = "failed", f"the job is too big for the cluster: {refused}"


@contextlib.contextmanager
def console_to(path: Path) -> Iterator[None]:
    """This process's stdout and stderr (the file descriptors: child processes' too) appended
    to ``path`` within the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


@contextlib.contextmanager
def working_dir(path: str) -> Iterator[None]:
    """In ``path`` within the block, if this node has it (the sweep's own folder: relative
    paths in the config mean what they mean for the sweep's command)."""
    before = os.getcwd()
    if os.path.isdir(path):
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def execute(
    hydra_context: HydraContext,
    config: DictConfig,
    singleton_state: dict[Any, Any],
    share: dict[str, int],
    cwd: str,
) -> dict[str, Any]:
    """One job, inside its placement group (a Ray task): Hydra's ``run_job`` with the app's
    task function, its console in ``log.txt``, its groups sized by ``share``. Returns how it
    went: ``done`` (and the task's value), ``failed`` or ``fault`` (and the one-line error)."""
    from sim.runtime.run import hydra_task

    entered = time.time()
    setup_globals()
    Singleton.set_state(singleton_state)
    folder = Path(config.hydra.sweep.dir) / str(config.hydra.sweep.subdir)
    folder.mkdir(parents=True, exist_ok=True)
    node_id = ray.get_runtime_context().get_node_id()
    where = {"node": ray.util.get_node_ip_address(), "node_id": node_id, "pid": os.getpid()}
    with console_to(folder / LOG), job_share(share), working_dir(cwd):
        print(
            f"[job {config.hydra.job.num}] pid {os.getpid()} on node {node_id} "
            f"({where['node']}): {' '.join(config.hydra.overrides.task)}",
            flush=True,
        )
        returned = run_job(
            hydra_context=hydra_context,
            task_function=hydra_task,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        if returned.status == JobStatus.COMPLETED:
            outcome = {"status": "done", "value": returned.return_value}
        else:
            error = returned._return_value
            if not isinstance(error, CohortError):
                traceback.print_exception(error)
            status = "fault" if isinstance(error, FAULTS) else "failed"
            outcome = {"status": status, "error": one_line(error)}
            print(f"cohort: error: {outcome['error']}", file=sys.stderr, flush=True)
    del returned
    gc.collect()  # the job's actor handles, if a cycle held one: its actors end now
    return {**outcome, **where, "entered": entered, "left": time.time()}


class View:
    """The sweep's progress: a live line on a terminal (rich), else one line per finished job."""

    def __init__(self, jobs: list[Job], live: bool | None) -> None:
        self.jobs, self.started = jobs, time.monotonic()
        self.live = sys.stdout.isatty() if live is None else live
        self._progress = None
        if self.live:
            from rich.progress import Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("sweep"), TimeElapsedColumn(), TextColumn("{task.description}")
            )
            self._task = self._progress.add_task(self.counts(), total=None)
            self._progress.start()

    def counts(self) -> str:
        tally: dict[str, int] = {}
        for job in self.jobs:
            tally[job.status] = tally.get(job.status, 0) + 1
        done = tally.get("done", 0) + tally.get("finished_before", 0)
        parts = [
            f"{done}/{len(self.jobs)} done",
            f"{tally.get('running', 0)} running",
            f"{tally.get('queued', 0)} queued",
            f"{tally.get('failed', 0)} failed",
        ]
        ran = tally.get("done", 0)
        left = tally.get("running", 0) + tally.get("queued", 0)
        elapsed = time.monotonic() - self.started
        if ran and left:
            parts.append(f"ETA {clock(elapsed / ran * left)}")
        return ", ".join(parts)

    def update(self, finished: Job | None = None) -> None:
        if self._progress is not None:
            if finished is not None and finished.status == "failed":  # stays above the line
                line = f"job {finished.index} failed: {finished.error}"
                self._progress.console.print(line, markup=False, highlight=False)
            self._progress.update(self._task, description=self.counts())
        elif finished is not None:
            how = f"{finished.status} ({finished.error})" if finished.error else finished.status
            elapsed = clock(time.monotonic() - self.started)
            print(
                f"[sweep {elapsed}] job {finished.index} {how} in {finished.wall_s:.1f} s "
                f"on {finished.node} (node {(finished.node_id or '?')[:8]}): {self.counts()}",
                flush=True,
            )

    def refused(self, job: Job) -> None:
        line = (
            f"[sweep {clock(time.monotonic() - self.started)}] job {job.index} refused: {job.error}"
        )
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
            self._progress.update(self._task, description=self.counts())
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=self.counts())
            self._progress.stop()


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


class Sweep:
    """Runs planned jobs side by side on the Ray of this process (see the module docstring)."""

    def __init__(
        self, jobs: list[Job], settings: Settings, hydra_context: HydraContext, cwd: str
    ) -> None:
        self.jobs, self.settings, self.hydra_context, self.cwd = jobs, settings, hydra_context, cwd
        self.nodes = cluster_nodes()  # each node's resources when the sweep starts
        self._total: tuple[float, Resources] = (time.monotonic(), add(*self.nodes))
        self.in_flight = min(len(jobs), settings.max_concurrent or len(jobs))
        self.running: dict[Any, tuple[Job, Any]] = {}  # task ref -> (job, placement group)
        # Placement groups of finished jobs, by their bundles, for the next job of that shape:
        # a new group right after a removal waits for the freed resources (up to ~1 s here).
        self.idle: dict[str, list[Any]] = {}
        self.remote = ray.remote(execute)

    def take(self, inbox: queue.Queue, ready: deque, view: View, wait: bool) -> bool:
        """Move the jobs composed so far from ``inbox`` into ``ready`` (their reservations
        computed; refused jobs reported, jobs finished before skipped); with ``wait``, wait a
        little for one. Returns whether more are to come."""
        while True:
            try:
                item = inbox.get(timeout=0.2) if wait else inbox.get_nowait()
            except queue.Empty:
                return True
            if item is None:
                return False
            wait = False
            job, protocol, cluster = item
            if protocol is not None:
                reserve(job, protocol, cluster, self.settings, self.nodes, self.in_flight)
            if job.status == "failed":
                view.refused(job)
            elif not finished_before(job):
                ready.append(job)

    def run(self, inbox: queue.Queue) -> None:
        """Run the jobs as ``inbox`` hands them over composed (see :func:`compose_all`)."""
        ready: deque[Job] = deque()
        view = View(self.jobs, self.settings.progress)
        limit = self.settings.max_concurrent or len(self.jobs)
        composing = True
        try:
            while composing or ready or self.running:
                if composing:
                    idle = not ready and not self.running
                    composing = self.take(inbox, ready, view, wait=idle)
                while ready and len(self.running) < limit and self.admits(ready[0]):
                    self.submit(ready.popleft())
                if ready and not self.running and not self.admits(ready[0]):
                    job = ready.popleft()  # the cluster shrank: it will never fit now
                    job.status = "failed"
                    job.error = f"the job does not fit the cluster's nodes now ({job.total()})"
                    view.update(job)
                    continue
                if not self.running:
                    continue
                timeout = 0.05 if composing and not ready else 0.5  # a job may come, or end
                done, _ = ray.wait(list(self.running), num_returns=1, timeout=timeout)
                for ref in done:
                    job = self.collect(ref)
                    if job.status == "queued":
                        ready.appendleft(job)  # a fault: again, from its checkpoint
                    view.update(job)
                if not done:
                    view.update()
        except BaseException:  # Ctrl-C, or the sweep's own Ray lost: stop what runs
            for ref, (job, _) in list(self.running.items()):
                ray.cancel(ref, force=True)
                job.status, job.error = (
                    "interrupted",
                    "the sweep was stopped; resume=true continues it",
                )
                self.release(ref)
            raise
        finally:
            view.close()
            self.drop_idle()

    def admits(self, job: Job) -> bool:
        """Whether ``job`` fits beside the jobs in flight and the idle placement groups (one
        of its own shape would be its own; if the others are in the way, they are removed)."""
        held = add(*(j.total() for j, _ in self.running.values()))
        have = self.cluster_total()
        if not fits(add(held, job.total()), have):
            return False
        own = shape(job.bundles)
        others = self.idle_bundles(except_one=own)
        if not fits(add(held, *others, job.total()), have):
            for key in [k for k in self.idle if k != own]:  # in the way: give them back
                self.drop_idle(key)
        return True

    def cluster_total(self) -> Resources:
        """The live nodes' resources together, read again at most once a second."""
        read_at, total = self._total
        if time.monotonic() - read_at > 1.0:
            self._total = (time.monotonic(), add(*cluster_nodes()))
        return self._total[1]

    def idle_bundles(self, except_one: str | None = None) -> list[Resources]:
        """The bundles of the idle placement groups, less one group of shape ``except_one``."""
        found = []
        for key, groups in self.idle.items():
            for group in groups[1:] if key == except_one else groups:
                found += group.bundle_specs
        return found

    def drop_idle(self, key: str | None = None) -> None:
        """Remove the idle placement groups (of one shape, or all)."""
        from ray.util.placement_group import remove_placement_group

        for found in [key] if key is not None else list(self.idle):
            for group in self.idle.pop(found, []):
                remove_placement_group(group)

    def submit(self, job: Job) -> None:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        job.attempts += 1
        config = job.config
        if config.resume or job.attempts > 1:  # resume=true, or a retry after a fault
            with read_write(config), open_dict(config):
                # A job that got going resumes from its checkpoint (or starts again if it
                # stopped before the first); one that never wrote its config starts afresh.
                config.resume = (job.folder / CONFIG).exists()
        group = None
        if job.bundles:
            pooled = self.idle.get(shape(job.bundles))
            group = pooled.pop() if pooled else placement_group(job.bundles, strategy="PACK")
        strategy = (  # the job's own process beside its first bundle; the rest captured
            PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
            )
            if group is not None
            else "DEFAULT"
        )
        ref = self.remote.options(
            num_cpus=0, max_retries=0, scheduling_strategy=strategy, name=f"sweep job {job.index}"
        ).remote(self.hydra_context, config, Singleton.get_state(), job.share, self.cwd)
        job.status, job.submitted = "running", time.time()
        self.running[ref] = (job, group)

    def collect(self, ref: Any) -> Job:
        job, group = self.running[ref]
        job.wall_s += time.time() - job.submitted
        if group is not None:
            job.bundle_nodes = bundle_nodes(group)
        try:
            outcome = ray.get(ref)
        except FAULTS as error:
            outcome = {"status": "fault", "error": one_line(error)}
        except ray.exceptions.RayError as error:
            outcome = {"status": "failed", "error": one_line(error)}
        self.release(ref, keep=outcome["status"] != "fault")
        if "entered" in outcome:  # the launcher's own time around the job's
            job.overhead_s += outcome["entered"] - job.submitted + time.time() - outcome["left"]
            job.span = (outcome["entered"], outcome["left"])
        job.node = outcome.get("node", job.node)
        job.node_id = outcome.get("node_id", job.node_id)
        if outcome["status"] == "done":
            job.status, job.value, job.error = "done", outcome["value"], None
        elif outcome["status"] == "fault" and job.attempts <= self.settings.max_retries:
            job.status, job.error = "queued", None
            print(
                f"[sweep] job {job.index}: infrastructure fault ({outcome['error']}); "
                f"again from its checkpoint (attempt {job.attempts + 1})",
                file=sys.stderr,
                flush=True,
            )
        else:
            job.status, job.error = "failed", outcome["error"]
            if outcome["status"] == "fault":
                job.error = f"{job.attempts} attempts, each lost to a fault; last: {job.error}"
        return job

    def release(self, ref: Any, keep: bool = False) -> None:
        """The job's placement group: kept for the next job of its shape (``keep``: its job
        ended by itself, and its actors with it), else removed, with whatever of the job still
        holds its bundles."""
        from ray.util.placement_group import remove_placement_group

        _, group = self.running.pop(ref)
        if group is None:
            return
        if keep:
            self.idle.setdefault(shape(group.bundle_specs), []).append(group)
        else:
            remove_placement_group(group)


def shape(bundles: Sequence[dict[str, float]]) -> str:
    """A key of a placement group's bundles."""
    return json.dumps([sorted(bundle.items()) for bundle in bundles])


def bundle_nodes(group: Any) -> list[str]:
    """The IP address of the node of each bundle of a placement group."""
    from ray.util.placement_group import placement_group_table

    addresses = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
    placed = placement_group_table(group).get("bundles_to_node_id", {})
    return [addresses.get(placed[b], "?") for b in sorted(placed)]


def finished_before(job: Job) -> bool:
    """With ``resume=true``, whether the job finished in an earlier run of the sweep (its
    summary written); if so it is marked so, its task's value its objective's final value from
    that summary (None without an objective)."""
    if not (job.config.resume and (job.folder / SUMMARY).exists()):
        return False
    objective = job.config.get("objective")
    final = json.loads((job.folder / SUMMARY).read_text())["final"] if objective else {}
    job.status, job.value = "finished_before", final.get(objective)
    return True


def job_return(job: Job) -> JobReturn:
    """What Hydra's sweepers read of a job. A failed job is returned as completed with no
    value: Hydra's basic sweeper would otherwise stop the sweep at it (before its report);
    the failure is in the table at the end, ``sweep.json`` and the exit status."""
    returned = JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED)
    returned.return_value = job.value
    if job.config is not None:
        returned.cfg = job.config
        returned.working_dir = str(job.folder)
    return returned


def write_record(sweep_dir: Path, jobs: list[Job]) -> list[dict[str, Any]]:
    """``sweep.json``: every job of the sweep so far (a sweeper may launch several batches);
    returns their records."""
    path = sweep_dir / RECORD
    known = {}
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            known = {r["job"]: r for r in json.loads(path.read_text())["jobs"]}
    known.update({job.index: job.record() for job in jobs})
    records = [known[k] for k in sorted(known)]
    nodes = sorted({r["node"] for r in records if r["node"]})
    text = json.dumps({"nodes": nodes, "jobs": records}, indent=2)
    path.write_text(text + "\n")
    return records


def failure_table(records: list[dict[str, Any]]) -> str:
    """A Markdown table of the jobs (``sweep.json`` records) that failed (empty if none did)."""
    failed = [r for r in records if r["status"] in ("failed", "interrupted")]
    if not failed:
        return ""
    rows = [f"| {r['job']} | {' '.join(r['overrides'])} | {r['error']} |" for r in failed]
    head = f"{len(failed)} of {len(records)} jobs did not finish:\n\n| job | overrides | error |"
    return "\n".join([head, "|---|---|---|", *rows])


def batch_jobs(
    config: DictConfig, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> tuple[Path, list[Job]]:
    """The sweep's folder (made) and a batch's jobs, numbered from ``initial_job_idx``."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        Job(initial_job_idx + k, list(overrides), sweep_dir / str(initial_job_idx + k))
        for k, overrides in enumerate(job_overrides)
    ]
    return sweep_dir, jobs


def launch(
    settings: Settings,
    hydra_context: HydraContext,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    """Compose, check and run one batch of a sweep's jobs; returns them in the batch's order."""
    from sim.runtime.run import Beside
    from sim.runtime.session import start_ray

    sweep_dir, jobs = batch_jobs(config, job_overrides, initial_job_idx)
    # The jobs are composed and checked in a thread: beside Ray's start, then beside the first
    # jobs (about 0.1 s a job: ahead of the jobs, so a refusal is reported within the time the
    # whole sweep's composing takes, and the jobs before it have not waited for it).
    inbox: queue.Queue = queue.Queue()
    Beside(compose_all, hydra_context.config_loader, config, jobs, sweep_dir, inbox)
    if not ray.is_initialized():  # the sweep's first batch: Ray starts beside the composing
        cluster = OmegaConf.to_object(OmegaConf.merge(ClusterConfig, config.cluster))
        start_ray(cluster, side_by_side=True)
    sweep = Sweep(jobs, settings, hydra_context, os.getcwd())
    print(f"[sweep] {len(jobs)} jobs in {sweep_dir}", flush=True)
    try:
        sweep.run(inbox)
    finally:
        finish(sweep_dir, jobs)
    return [job_return(job) for job in jobs]


def finish(sweep_dir: Path, jobs: list[Job]) -> None:
    """A batch's end: ``sweep.json``, and the table of the sweep's jobs so far (every batch)
    that did not finish (printed, in ``failed.md``; this batch's in the exit status)."""
    table = failure_table(write_record(sweep_dir, jobs))
    failed_jobs.extend(job.index for job in jobs if job.status in ("failed", "interrupted"))
    if table:
        (sweep_dir / "failed.md").write_text(table + "\n")
        print(f"\n{table}\n", file=sys.stderr, flush=True)
    else:
        (sweep_dir / "failed.md").unlink(missing_ok=True)


def launch_in_turn(
    launcher: Launcher,
    hydra_context: HydraContext,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    """One batch of a sweep's jobs run by ``launcher`` (Hydra's basic one: in this process, one
    after another), every job composed and checked before the first starts. A refused job is
    reported and skipped, a job that fails is recorded (a Cohort error was printed as one line
    by the app; anything else's traceback is printed), and the next job runs either way; the
    batch ends with :func:`finish`."""
    sweep_dir, jobs = batch_jobs(config, job_overrides, initial_job_idx)
    for job in jobs:
        compose_job(hydra_context.config_loader, config, job, sweep_dir)
        if job.status == "failed":
            print(f"[sweep] job {job.index} refused: {job.error}", file=sys.stderr, flush=True)
        elif finished_before(job):
            continue
        elif job.config.resume and not (job.folder / CONFIG).exists():  # never got going
            job.overrides = [o for o in job.overrides if not o.startswith("resume=")]
            job.overrides.append("resume=false")
    returns: dict[int, JobReturn] = {}
    try:
        for job in [job for job in jobs if job.status == "queued"]:
            started = time.time()
            [returned] = launcher.launch([job.overrides], initial_job_idx=job.index)
            job.wall_s, job.attempts = time.time() - started, 1
            if returned.status == JobStatus.COMPLETED:
                job.status, job.value, returns[job.index] = "done", returned.return_value, returned
                continue
            error = returned._return_value
            if not isinstance(error, CohortError):
                traceback.print_exception(error)
            job.status, job.error = "failed", one_line(error)
    except BaseException:  # Ctrl-C, or the launcher itself failed: what ran stays recorded
        for job in jobs:
            if job.status == "queued":
                job.status, job.error = "interrupted", "the sweep was stopped"
        raise
    finally:
        finish(sweep_dir, jobs)
    return [returns.get(job.index) or job_return(job) for job in jobs]


def run_jobs(
    job_overrides: Sequence[Sequence[str]],
    sweep_dir: str | Path,
    overrides: Sequence[str] = (),
    **settings: Any,
) -> list[JobReturn]:
    """From Python: the jobs ``job_overrides`` (each a list of overrides on top of
    ``overrides``) side by side on the Ray of this process (started if there is none; left
    running),
    as ``hydra/launcher=cohort`` runs a sweep's jobs; ``settings``: ``hydra.launcher``'s."""
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from sim.runtime.config import CONF_DIR, register_schemas

    register_schemas()
    launcher = [f"hydra.launcher.{key}={'null' if v is None else v}" for key, v in settings.items()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        hydra = GlobalHydra.instance().hydra
        config = hydra.compose_config(
            "config",
            [*overrides, "hydra/launcher=cohort", f"hydra.sweep.dir={sweep_dir}", *launcher],
            run_mode=RunMode.MULTIRUN,
        )
        HydraConfig.instance().set_config(config)
        context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(config))
        options = OmegaConf.to_container(config.hydra.launcher)
        options.pop("_target_")
        return launch(Settings(**options), context, config, job_overrides, 0)
