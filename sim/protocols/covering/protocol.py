"""The active-covering protocol (Jiang & Rostamizadeh, ICML 2021): find every positive of a pool.

One class of a pool env is the positive set (``positive_class``; the pool may be subsampled to
``pool_size`` points). Oracle actors hold the labels and answer each query; the strategy learns
only whether the point is positive. The strategy (``algorithm=explore_commit``, ...) runs in a
worker actor that holds only the features and proposes ``query_batch`` points at a time. The
run ends when every positive has been found or ``budget`` queries are spent. A record every
``round_queries`` queries gives the queries made and the positives found; the last adds the
excess query cost (queries until the last positive was found, minus the number of positives;
also for 90% and 99% of them: one outlying positive can cost most of the pool) and the area
under the coverage curve (:func:`sim.protocols.covering.metrics.coverage_auc`).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import ray

from sim import checks, seeding
from sim.errors import CohortError, ConfigError
from sim.interfaces.active import PoolData, PoolEnvironment, PoolView
from sim.interfaces.covering import CoveringAlgorithm
from sim.interfaces.protocol import Outcome, RunContext, Setup
from sim.protocols.active.oracle import OracleDesk, start_first_oracle
from sim.protocols.cadence import Cadence, Recorder
from sim.protocols.covering.metrics import coverage_auc, excess_query_cost, queries_to_cover
from sim.runtime.config import ClusterConfig
from sim.runtime.progress import progress_line
from sim.runtime.reservation import Reservation
from sim.runtime.workers import wait_started

CURVES = ("positives_found",)
PARTIAL = (0.9, 0.99)  # also report the excess cost of finding these fractions of the positives


def as_float(value: int | None) -> float | None:
    return None if value is None else float(value)


def principal_components(x: np.ndarray, dims: int | None) -> np.ndarray:
    """``x`` centred and projected on its top ``dims`` principal axes (unchanged when None or
    when ``dims`` >= the feature count); distances in the projection approximate the original."""
    if dims is None or dims >= x.shape[1]:
        return x
    centred = x - x.mean(axis=0, dtype=np.float64)
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return (centred @ vectors[:, ::-1][:, :dims]).astype(np.float32)


@dataclass(frozen=True)
class Subsample:
    """A pool env on a uniform subsample of ``pool_size`` of its points (drawn from ``seed``;
    the whole pool when None or when the pool is smaller: the driver checks the size)."""

    env: PoolEnvironment
    pool_size: int | None
    seed: int

    def locate(self) -> None:
        self.env.locate()

    def load_pool(self) -> PoolData:
        data = self.env.load_pool()
        if self.pool_size is None or self.pool_size >= len(data.y):
            return data
        keep = np.sort(
            seeding.rng(self.seed, "covering_pool").choice(len(data.y), self.pool_size, False)
        )
        return PoolData(
            data.x[keep], data.y[keep], data.test_x, data.test_y, data.num_classes, data.name
        )


@ray.remote
class CoveringWorker:
    """Holds the pool's features (no labels) and the strategy's state; proposes and observes."""

    def __init__(self, view: PoolView, algorithm: CoveringAlgorithm, seed: int, dims: int | None):
        self.state = algorithm.start(principal_components(view.x, dims), seed)

    def step(self, indices: np.ndarray, positive: np.ndarray, k: int) -> np.ndarray:
        """Observe the last answers (none at the start), then propose the next ``k``."""
        if len(indices):
            self.state.observe(indices, positive)
        return np.asarray(self.state.next(k), np.int64)

    def replay(self, queries: np.ndarray, positive: np.ndarray, sizes: np.ndarray) -> None:
        """Rebuild the state from a run's log, checking every proposal against it (resume)."""
        at = 0
        for size in sizes:
            proposed = np.asarray(self.state.next(int(size)), np.int64)
            logged = queries[at : at + size]
            if not np.array_equal(proposed, logged):
                raise CohortError(
                    f"resume: the strategy proposes {proposed[:5].tolist()} at query {at}, the "
                    f"checkpoint has {logged[:5].tolist()}: it is not this config's run"
                )
            self.state.observe(logged, positive[at : at + size])
            at += int(size)


@dataclass
class Covering:
    """Find every point of ``positive_class`` in the pool: ``query_batch`` queries per step,
    a record every ``round_queries`` queries, at most ``budget`` queries (None: the pool's size).
    ``pca_dims``: the strategies see the pool projected on that many principal axes (None, or a
    pool with no more features: as they are). ``oracles`` annotator actors share the requests.
    Records fall on the first step past each multiple of ``round_queries`` (a step is never cut
    to fit a round, so the rounds do not change the run). A run stopped by its budget resumes
    with a larger one as the same run when the budget is a multiple of ``query_batch`` (else its
    last step was cut short, which an adaptive strategy sees)."""

    resumable: ClassVar[tuple[str, ...]] = ("budget",)
    roles: ClassVar[tuple[str, ...]] = ("worker", "oracle")  # the cluster roles it places

    positive_class: int = 1
    pool_size: int | None = None
    pca_dims: int | None = None
    query_batch: int = 10
    round_queries: int = 500
    budget: int | None = None
    oracles: int = 1
    checkpoint_every: int = 0  # rounds; 0 = only at the end

    def __post_init__(self) -> None:
        checks.at_least(self, 0, "positive_class", "checkpoint_every")
        checks.at_least(self, 1, "query_batch", "round_queries", "oracles")
        checks.at_least(self, 1, "pool_size", "pca_dims", "budget", optional=True)

    def reservation(self, cluster: ClusterConfig, workers: int) -> Reservation:
        """One covering worker (an actor) and the oracles."""
        return Reservation({"worker": 1, "oracle": self.oracles})

    def prepare(self, setup: Setup) -> CoveringJob:
        env = setup.component(
            "env", PoolEnvironment, "a pool env (env=tabular, env=fashion_mnist_pool)", "covering"
        )
        algorithm = setup.component(
            "algorithm",
            CoveringAlgorithm,
            "a covering strategy (algorithm=explore_commit, offline_cover, ...)",
            "covering",
        )
        try:
            env.locate()
        except FileNotFoundError as error:
            raise CohortError(f"env: {error}") from None
        pool = Subsample(env, self.pool_size, setup.seed)
        return CoveringJob(self, pool, algorithm, setup.seed, setup.start)


PROGRESS = (("positives_found", "found {:.0f}"), ("coverage", "coverage {:.3f}"))


@dataclass
class CoveringJob:
    settings: Covering
    pool: Subsample
    algorithm: CoveringAlgorithm
    seed: int
    start: Any = None

    def run(self, context: RunContext) -> Outcome:
        settings = self.settings
        desk, worker, positives = self.start_actors(context.cluster)
        pool_size, budget = len(desk.revealed), desk.budget
        queries, found, sizes = np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64)
        round_index, history = 0, []
        if self.start is not None:
            arrays, meta = self.start
            queries, found, sizes = arrays["queries"], arrays["found"], arrays["sizes"]
            round_index, history = meta["round"], meta["history"]
            if history and history[-1].get("covered"):
                raise CohortError("resume: this run has already found every positive")
            if len(queries) >= budget:
                raise CohortError(
                    f"resume: the run spent its budget of {budget} queries; raise protocol.budget "
                    "to continue it"
                )
            desk.restore({k: v for k, v in arrays.items() if k.startswith("oracle/")})
            ray.get(worker.replay.remote(queries, found, sizes))
        cadence = Cadence(checkpoint_every=settings.checkpoint_every)
        recorder = Recorder(context, history, functools.partial(round_line, budget), cadence)
        context.begin(history)
        last_indices, last_found = np.zeros(0, np.int64), np.zeros(0, bool)
        while True:
            round_index += 1
            tick = time.perf_counter()
            target = min(budget, round_index * settings.round_queries)
            hits = int(found.sum())  # kept up to date per step, not re-summed
            while len(queries) < target and hits < positives:
                k = min(settings.query_batch, budget - len(queries))  # rounds only report
                indices = ray.get(worker.step.remote(last_indices, last_found, k))
                if len(indices) == 0:
                    raise CohortError(
                        f"algorithm {type(self.algorithm).__name__}: proposed no point with "
                        f"{pool_size - len(queries)} unqueried and budget left"
                    )
                answers = desk.label(indices)
                last_indices, last_found = indices, answers == settings.positive_class
                queries = np.concatenate([queries, indices])
                found = np.concatenate([found, last_found])
                sizes = np.append(sizes, len(indices))
                hits += int(last_found.sum())
            covered = hits == positives
            done = covered or len(queries) >= budget
            record: dict[str, Any] = {
                "round": round_index,
                "queries": len(queries),
                "positives_found": float(hits),
                "coverage": hits / positives,
                "round_time_s": time.perf_counter() - tick,
            }
            if done:
                record.update(final_metrics(found, positives, pool_size))
            arrays = {"queries": queries, "found": found, "sizes": sizes}
            if recorder.step(round_index, record, lambda a=arrays: {**a, **desk.state()}, done):
                what = "all" if covered else "budget spent;"
                steps = f"{len(queries)} queries ({what} {hits}/{positives} found)"
                return Outcome(queries, history, CURVES, x="queries", steps=steps)

    def start_actors(self, cluster: ClusterConfig) -> tuple[OracleDesk, Any, int]:
        """The oracles (behind their desk) and the covering worker, started, and the number of
        positives in the pool; refuses a pool size or positive class the pool cannot give."""
        settings = self.settings
        make_oracle, first, pool_size, num_classes = start_first_oracle(
            self.pool, self.seed, 0.0, cluster
        )
        if settings.pool_size is not None and settings.pool_size > pool_size:
            raise ConfigError(
                f"protocol.pool_size: must be <= the pool's {pool_size} points "
                f"(got {settings.pool_size})"
            )
        if settings.positive_class >= num_classes:
            raise ConfigError(
                f"protocol.positive_class: the pool has classes 0..{num_classes - 1} "
                f"(got {settings.positive_class})"
            )
        positives = ray.get(first.count.remote(settings.positive_class))
        if positives == 0:
            raise CohortError(
                f"protocol.positive_class: class {settings.positive_class} has no point in the "
                f"pool of {pool_size}"
            )
        budget = min(settings.budget or pool_size, pool_size)
        oracles = [first, *(make_oracle(i) for i in range(1, settings.oracles))]
        desk = OracleDesk(oracles, make_oracle, pool_size, budget, 1.0)
        worker = CoveringWorker.options(**cluster.worker.ray_options()).remote(
            first.pool_view.remote(), self.algorithm, self.seed, settings.pca_dims
        )
        wait_started([worker], "worker", cluster)
        return desk, worker, positives


def round_line(budget: int, record: dict[str, Any]) -> str:
    """A round's progress line."""
    head = f"[round {record['round']:>3}]  queries {record['queries']:>6}/{budget}"
    return progress_line(head, record, PROGRESS)


def final_metrics(found: np.ndarray, positives: int, pool_size: int) -> dict[str, Any]:
    """The last record's measures of a run whose queries found ``found`` (in query order): the
    positives and pool, the queries to find them all, the excess query cost (also for 90% and 99%
    of the positives), its fraction of the pool, and the coverage curve's area."""
    excess = excess_query_cost(found, positives)
    return {
        "positives": positives,
        "pool_size": pool_size,
        "covered": float(int(found.sum()) == positives),
        "queries_to_cover": queries_to_cover(found, positives),
        "excess_query_cost": as_float(excess),
        "excess_fraction": None if excess is None else excess / pool_size,
        **{
            f"excess_query_cost_{round(100 * f)}": as_float(
                excess_query_cost(found, math.ceil(f * positives))
            )
            for f in PARTIAL
        },
        "coverage_auc": coverage_auc(found, positives, pool_size),
    }
