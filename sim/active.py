"""The active-learning protocol: oracle actors, a learner, a selector plugin, and the loop.

A run labels a random seed set, then repeats: train the learner on the revealed labels ->
evaluate it on the test set -> expose the pool (probabilities, embeddings; in fixed blocks, as
Ray tasks spread over the cluster) -> the selector picks ``batch_size`` unlabeled indices -> the
oracles label them; until the budget is spent. Learner and selector run in Ray worker processes
that receive only the label-free :class:`~sim.pool.PoolView` and the revealed labels.

A selector plugin implements only :meth:`Selector.select`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import ray
from omegaconf import DictConfig, OmegaConf

from sim import checkpoint, seeding
from sim.errors import CohortError, ConfigError
from sim.federated import split_range
from sim.learner import LearnerOutputs, MLPLearner, accuracy, expose
from sim.oracle import Oracle, OracleDesk
from sim.outputs import RunDirectory
from sim.pool import PoolEnvironment, PoolView
from sim.runtime import actor_device
from sim.training import ClientModel

ACTIVE_CURVES = ("test_accuracy",)


class Selector(Protocol):
    """What an active-learning selector plugin implements (a dataclass; its fields its config)."""

    protocol: ClassVar[str]  # "active"

    def select(
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """``batch_size`` distinct unlabeled pool indices. ``labeled`` is the (n,) bool mask;
        ``labels`` the (n,) revealed labels, -1 where unlabeled."""
        ...


def lowest_unlabeled(scores: np.ndarray, labeled: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest ``scores`` among unlabeled points, smallest first (ties by
    index). O(n) by partial sorting, so a 10^6-point pool takes milliseconds."""
    candidates = np.flatnonzero(~labeled)
    if k > len(candidates):
        raise ValueError(f"batch of {k} asked from {len(candidates)} unlabeled points")
    values = scores[candidates]
    if k < len(candidates):
        kept = np.argpartition(values, k - 1)[:k]
        candidates, values = candidates[kept], values[kept]
    return candidates[np.lexsort((candidates, values))]


class LowestScoreSelector:
    """Base of the selectors that rank points by a score of the learner's outputs: picks the
    ``k`` unlabeled points of lowest :meth:`priority` (ties by index)."""

    protocol: ClassVar[str] = "active"

    def priority(self, outputs: LearnerOutputs) -> np.ndarray:
        raise NotImplementedError

    def select(
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        return lowest_unlabeled(self.priority(outputs), labeled, batch_size)


@dataclass(frozen=True)
class RoundContext:
    """The fixed inputs of every round's tasks (one object, put once per run)."""

    learner: MLPLearner
    selector: Any
    seed: int
    num_cpus: float
    score_block: int


def _fit(
    view: PoolView,
    context: RoundContext,
    indices: np.ndarray,
    labels: np.ndarray,
    round_index: int,
    init: np.ndarray | None,
):
    device = actor_device(context.num_cpus)
    tick = time.perf_counter()
    model, loss = context.learner.fit(
        view.x[indices],
        labels,
        view.num_classes,
        seeding.rng(context.seed, "learner", round_index),
        seeding.torch_seed(context.seed, "learner_init", round_index),
        init,
        device,
    )
    train_time = time.perf_counter() - tick
    metrics = {
        "train_loss": loss,
        "test_accuracy": accuracy(model, view.test_x, view.test_y),
        "train_time_s": train_time,
    }
    return model.get_flat(), metrics


def _expose(view: PoolView, context: RoundContext, params: np.ndarray, start: int, stop: int):
    model = ClientModel(
        context.learner.build(view.x.shape[1], view.num_classes), actor_device(context.num_cpus)
    )
    model.set_flat(params)
    return expose(model, view.x[start:stop])


def _select(
    context: RoundContext,
    labeled_indices: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    round_index: int,
    *blocks: LearnerOutputs,
):
    outputs = LearnerOutputs.concatenate(list(blocks))
    labeled = np.zeros(len(outputs), bool)
    labeled[labeled_indices] = True
    full_labels = np.full(len(outputs), -1, np.int64)
    full_labels[labeled_indices] = labels
    rng = seeding.rng(context.seed, "select", round_index)
    tick = time.perf_counter()
    chosen = context.selector.select(outputs, labeled, full_labels, batch_size, rng)
    return np.asarray(chosen), time.perf_counter() - tick


fit_task = ray.remote(num_returns=2)(_fit)
expose_task = ray.remote(_expose)
select_task = ray.remote(num_returns=2)(_select)


def check_selection(chosen: np.ndarray, labeled: np.ndarray, k: int, name: str) -> np.ndarray:
    """A selector's answer must be ``k`` distinct, in-range, unlabeled indices."""
    chosen = np.asarray(chosen)
    ok = chosen.ndim == 1 and len(chosen) == k and np.issubdtype(chosen.dtype, np.integer)
    ok = (
        ok and len(np.unique(chosen)) == k and bool(((chosen >= 0) & (chosen < len(labeled))).all())
    )
    if not ok or labeled[chosen].any():
        raise CohortError(
            f"algorithm {name}: select must return {k} distinct unlabeled pool indices "
            f"(got {chosen!r:.120})"
        )
    return chosen.astype(np.int64)


@dataclass
class ActiveState:
    """Where an active run stands: the labels revealed so far, in the order they came."""

    indices: np.ndarray  # (m,) int64 pool indices
    labels: np.ndarray  # (m,) int64 their revealed labels
    params: np.ndarray | None = None  # the last learner's parameters (warm start)

    def extend(self, indices: np.ndarray, labels: np.ndarray) -> None:
        self.indices = np.concatenate([self.indices, indices])
        self.labels = np.concatenate([self.labels, labels])


def progress_line(record: dict[str, Any], budget: int) -> str:
    parts = [
        f"[round {record['round']:>3}]",
        f"labels {record['labels']:>{len(str(budget))}}/{budget}",
    ]
    parts.append(f"test_acc {record['test_accuracy']:.4f}")
    parts.append(f"train {record['train_time_s']:.2f}s")
    if "select_time_s" in record:
        parts.append(f"select {record['select_time_s']:.3f}s")
    parts.append(f"{record['round_time_s']:.2f}s")
    return "  ".join(parts)


def _save(
    run_dir: RunDirectory,
    state: ActiveState,
    desk: OracleDesk,
    round_index: int,
    history: list[dict[str, Any]],
    config: dict[str, Any],
) -> None:
    arrays = {"indices": state.indices, "labels": state.labels, **desk.state()}
    if state.params is not None:
        arrays["params"] = state.params
    meta = {"round": round_index, "history": history, "config": config}
    checkpoint.save(run_dir.checkpoint_path, arrays, meta)


def _open_desk(cfg: DictConfig, env: PoolEnvironment) -> tuple[OracleDesk, Any, int]:
    """Start the oracles; returns the desk, a reference to the pool view, and the pool size."""
    active = cfg.active
    options = OmegaConf.to_object(cfg.cluster.oracle).ray_options()

    def make_oracle(i: int):
        return Oracle.options(**options).remote(env, cfg.seed, i, active.label_noise)

    first = make_oracle(0)
    try:
        pool_size, _ = ray.get(first.describe.remote())
    except ray.exceptions.RayActorError as error:
        raise CohortError(f"env: the oracle could not load the pool: {error}") from None
    if active.budget > pool_size:
        raise ConfigError(
            f"active.budget: must be <= the pool's {pool_size} examples (got {active.budget})"
        )
    others = [make_oracle(i) for i in range(1, active.oracles)]
    desk = OracleDesk(
        [first, *others], make_oracle, pool_size, active.budget, active.cost_per_label
    )
    return desk, first.pool_view.remote(), pool_size


def train_active(
    cfg: DictConfig,
    env: PoolEnvironment,
    learner: MLPLearner,
    selector: Selector,
    run_dir: RunDirectory,
    config: dict[str, Any],
    start: tuple[dict[str, np.ndarray], dict[str, Any]] | None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The loop of the module docstring, from scratch or from a checkpoint ``start``."""
    active = cfg.active
    desk, view_ref, pool_size = _open_desk(cfg, env)
    if start is None:
        first = seeding.rng(cfg.seed, "seed_set").choice(pool_size, active.seed_size, replace=False)
        state = ActiveState(np.sort(first), np.zeros(0, np.int64))
        state.labels = desk.label(state.indices)
        round_index, history = 0, []
    else:
        arrays, meta = start
        desk.restore({k: v for k, v in arrays.items() if k.startswith("oracle/")})
        state = ActiveState(arrays["indices"], arrays["labels"], arrays.get("params"))
        round_index, history = meta["round"], meta["history"]
        if history and "selected" not in history[-1]:
            raise CohortError("resume: this run already spent its label budget")
    worker = OmegaConf.to_object(cfg.cluster.worker)
    options = worker.ray_options()
    context = ray.put(
        RoundContext(learner, selector, cfg.seed, worker.num_cpus, active.score_block)
    )
    run_dir.prepare(config)  # only now: every check that can refuse the run has passed
    run_dir.write_metrics(history)
    name = type(selector).__name__
    params = state.params
    while True:
        round_index += 1
        tick = time.perf_counter()
        init = state.params if learner.warm_start else None
        params_ref, metrics_ref = fit_task.options(**options).remote(
            view_ref, context, state.indices, state.labels, round_index, init
        )
        record: dict[str, Any] = {"round": round_index, "labels": len(state.indices)}
        remaining = min(active.budget, pool_size) - len(state.indices)
        if remaining > 0:
            k = min(active.batch_size, remaining)
            blocks = [
                expose_task.options(**options).remote(view_ref, context, params_ref, lo, hi)
                for lo, hi in split_range(pool_size, active.score_block)
            ]
            chosen_ref, seconds_ref = select_task.options(**options).remote(
                context, state.indices, state.labels, k, round_index, *blocks
            )
            chosen, seconds = ray.get([chosen_ref, seconds_ref])
            chosen = check_selection(chosen, desk.revealed, k, name)
            state.extend(chosen, desk.label(chosen))
            record.update(selected=k, select_time_s=seconds)
        params = ray.get(params_ref)
        state.params = params if learner.warm_start else None
        record.update(ray.get(metrics_ref))
        record.update(labels_spent=desk.spent, label_cost=desk.cost, oracle_restarts=desk.restarts)
        record["round_time_s"] = time.perf_counter() - tick
        history.append(record)
        run_dir.append_metrics(record)
        if cfg.progress:
            print(progress_line(record, active.budget), flush=True)
        done = remaining <= 0
        stop = done or (active.max_rounds is not None and round_index >= active.max_rounds)
        if stop or (cfg.checkpoint_every and round_index % cfg.checkpoint_every == 0):
            _save(run_dir, state, desk, round_index, history, config)
        if stop:
            return params, history
