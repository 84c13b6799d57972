"""The active-learning protocol: oracle actors, a learner, a selector plugin, and the loop.

A run labels a random seed set, then repeats: train the learner on the revealed labels ->
evaluate it on the test set -> expose the pool (probabilities, embeddings; in fixed blocks, as
Ray tasks spread over the cluster) -> the selector picks ``batch_size`` unlabeled indices -> the
oracles label them; until the budget is spent. Learner and selector run in Ray worker processes
that receive only the label-free :class:`~sim.interfaces.active.PoolView` and the revealed
labels.

Two plug-in points beyond a plain selector: a selector may keep state across rounds
(:class:`~sim.interfaces.active.StatefulSelector`: computed once on the first selecting round's
outputs, then handed to each ``select`` and checkpointed), and may weight what it chooses
(:class:`~sim.interfaces.active.WeightedSelection`: the learner's loss counts each chosen
example that many times from then on).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import ray

from sim import checks, seeding
from sim.errors import CohortError, ConfigError
from sim.interfaces.active import (
    Learner,
    LearnerOutputs,
    PoolEnvironment,
    PoolView,
    Selector,
    StatefulSelector,
    WeightedSelection,
)
from sim.interfaces.protocol import Outcome, RunContext, Setup, unflatten
from sim.protocols.active.oracle import OracleDesk, start_first_oracle
from sim.protocols.cadence import Cadence, Recorder
from sim.protocols.federated.actors import split_range
from sim.runtime.config import ClusterConfig
from sim.runtime.progress import progress_line
from sim.runtime.reservation import Reservation
from sim.runtime.workers import actor_device
from sim.training.learner import learner_layout

CURVES = ("test_accuracy",)


@dataclass
class Active:
    """Pool-based batch active learning: ``seed_size`` random labels (``seed_set=every_class``:
    one of each class among them, drawn by the simulator, which knows the labels), then
    ``batch_size`` labels a round chosen by the selector, until ``budget`` labels (at most
    ``pool_fraction`` of the pool) are spent (or ``max_rounds``
    rounds: ``resume=true`` continues). ``oracles`` annotator actors answer each request in
    parallel, each flipping ``label_noise`` of its answers (fixed per example) at
    ``cost_per_label``; the pool is scored in Ray tasks of ``score_block`` rows."""

    resumable: ClassVar[tuple[str, ...]] = ("max_rounds",)
    roles: ClassVar[tuple[str, ...]] = ("worker", "oracle")  # the cluster roles it places

    seed_size: int = 20
    batch_size: int = 10
    budget: int = 100
    pool_fraction: float | None = None  # the budget at most this fraction of the pool
    seed_set: str = "random"  # or every_class: a label of every class in it
    oracles: int = 1
    cost_per_label: float = 1.0
    label_noise: float = 0.0
    score_block: int = 65536
    max_rounds: int | None = None
    checkpoint_every: int = 10  # rounds; 0 = only at the end

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "seed_size", "batch_size", "budget", "oracles", "score_block")
        if self.budget < self.seed_size:
            raise ValueError(f"budget: must be >= seed_size {self.seed_size} (got {self.budget})")
        checks.in_interval(self, 0, 1, "label_noise")
        if self.pool_fraction is not None:
            checks.positive(self, "pool_fraction")
            checks.in_interval(self, 0, 1, "pool_fraction", closed=True)
        if self.seed_set not in SEED_SETS:
            raise ValueError(f"seed_set: must be one of {SEED_SETS} (got {self.seed_set!r})")
        checks.at_least(self, 0, "cost_per_label", "checkpoint_every")
        checks.at_least(self, 1, "max_rounds", optional=True)

    def reservation(self, cluster: ClusterConfig, workers: int) -> Reservation:
        """``workers`` learner/selector tasks at once and the oracles."""
        return Reservation({"worker": workers, "oracle": self.oracles})

    def prepare(self, setup: Setup) -> ActiveJob:
        env = setup.component(
            "env", PoolEnvironment, "a pool env (env=tabular, env=fashion_mnist_pool)", "active"
        )
        selector = setup.component(
            "algorithm", Selector, "a selector (algorithm=margin, entropy, ...)", "active"
        )
        learner = setup.component("learner", Learner, "a learner (learner=mlp)", "active")
        needed = getattr(selector, "models_needed", 1)
        if learner.models < needed:
            raise ConfigError(
                f"learner: algorithm {type(selector).__name__} needs a learner of {needed} "
                f"models (learner=ensemble learner.size={needed}; got {learner.models})"
            )
        if getattr(selector, "mc_samples", 0) and not getattr(learner, "dropout", 0) > 0:
            raise ConfigError(
                f"learner.dropout: algorithm {type(selector).__name__} samples the learner with "
                "MC dropout: it needs a learner trained with dropout (e.g. learner.dropout=0.1)"
            )
        try:
            env.locate()  # fail here, with the way to get the data, not inside an oracle actor
        except FileNotFoundError as error:
            raise CohortError(f"env: {error}") from None
        return ActiveJob(self, env, learner, selector, setup.seed, setup.start)


@dataclass(frozen=True)
class RoundContext:
    """The fixed inputs of every round's tasks (one object, put once per run)."""

    learner: Any
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
    weights: np.ndarray | None,
):
    from sim.training.model import accuracy  # torch: in the task's process, not the driver's

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
        weights,
    )
    train_time = time.perf_counter() - tick
    metrics = {
        "train_loss": loss,
        "test_accuracy": accuracy(model, view.test_x, view.test_y),
        "train_time_s": train_time,
    }
    return model.get_flat(), metrics


def _expose(
    view: PoolView,
    context: RoundContext,
    params: np.ndarray,
    start: int,
    stop: int,
    round_index: int,
):
    from sim.training.learner import expose
    from sim.training.model import ClientModel

    model = ClientModel(
        context.learner.build(view.x.shape[1], view.num_classes), actor_device(context.num_cpus)
    )
    model.set_flat(params)
    samples = getattr(context.selector, "mc_samples", 0)  # MC dropout (BALD): masks per block
    rng = seeding.rng(context.seed, "mc_dropout", round_index, start) if samples else None
    return expose(model, view.x[start:stop], mc_samples=samples, rng=rng)


def _select(
    context: RoundContext,
    labeled_indices: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    round_index: int,
    state: dict[str, np.ndarray] | None,
    *blocks: LearnerOutputs,
):
    """The selector's answer as ``(indices, weights or None, next state or None, seconds)``;
    a stateful selector's state is made here on its first call (timed apart: ``state_time_s``)."""
    outputs = LearnerOutputs.concatenate(list(blocks))
    labeled = np.zeros(len(outputs), bool)
    labeled[labeled_indices] = True
    full_labels = np.full(len(outputs), -1, np.int64)
    full_labels[labeled_indices] = labels
    selector = context.selector
    stateful = isinstance(selector, StatefulSelector)
    seconds: dict[str, float] = {}
    if stateful and state is None:
        tick = time.perf_counter()
        rng = seeding.rng(context.seed, "selector_state")
        state = selector.initial_state(outputs, labeled, full_labels, rng)
        seconds["state_time_s"] = time.perf_counter() - tick
    rng = seeding.rng(context.seed, "select", round_index)
    tick = time.perf_counter()
    if stateful:
        chosen, state = selector.select(outputs, labeled, full_labels, batch_size, rng, state)
    else:
        chosen = selector.select(outputs, labeled, full_labels, batch_size, rng)
    seconds["select_time_s"] = time.perf_counter() - tick
    if isinstance(chosen, WeightedSelection):
        return np.asarray(chosen.indices), np.asarray(chosen.weights), state, seconds
    return np.asarray(chosen), None, state, seconds


fit_task = ray.remote(num_returns=2)(_fit)
expose_task = ray.remote(_expose)
select_task = ray.remote(num_returns=4)(_select)
layout_task = ray.remote(learner_layout)


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


def check_weights(weights: np.ndarray, k: int, name: str) -> np.ndarray:
    """A weighted selection's weights: ``k`` finite positive numbers."""
    weights = np.asarray(weights, np.float64)
    if weights.shape != (k,) or not (np.isfinite(weights).all() and (weights > 0).all()):
        raise CohortError(
            f"algorithm {name}: a WeightedSelection needs {k} finite weights > 0 "
            f"(got {weights!r:.120})"
        )
    return weights


@dataclass
class ActiveState:
    """Where an active run stands: the labels revealed so far, in the order they came, with
    their importance weights once a selector has weighted any (None: all 1)."""

    indices: np.ndarray  # (m,) int64 pool indices
    labels: np.ndarray  # (m,) int64 their revealed labels
    params: np.ndarray | None = None  # the last learner's parameters (warm start)
    weights: np.ndarray | None = None  # (m,) float64 importance weights, or None: all 1

    def extend(
        self, indices: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
    ) -> None:
        if weights is not None and np.all(weights == 1):
            weights = None  # all 1: the learner trains unweighted, bit for bit
        if weights is not None or self.weights is not None:
            old = np.ones(len(self.indices)) if self.weights is None else self.weights
            new = np.ones(len(indices)) if weights is None else weights
            self.weights = np.concatenate([old, new])
        self.indices = np.concatenate([self.indices, indices])
        self.labels = np.concatenate([self.labels, labels])


SEED_SETS = ("random", "every_class")
PROGRESS = (
    ("test_accuracy", "test_acc {:.4f}"),
    ("train_time_s", "train {:.2f}s"),
    ("select_time_s", "select {:.3f}s"),
    ("state_time_s", "state {:.2f}s"),
)


def run_budget(settings: Active, pool_size: int) -> int:
    """The labels a run may spend: ``budget``, at most ``pool_fraction`` of the pool (never
    below the seed set)."""
    if settings.pool_fraction is None:
        return settings.budget
    return min(settings.budget, max(settings.seed_size, int(settings.pool_fraction * pool_size)))


def _open_desk(
    settings: Active, env: PoolEnvironment, cluster: Any, seed: int
) -> tuple[OracleDesk, Any, int]:
    """Start the oracles; returns the desk (its ``budget`` the run's), a reference to the pool
    view, and the pool size. A seed set of every class is checked against the classes."""
    make_oracle, first, pool_size, classes = start_first_oracle(
        env, seed, settings.label_noise, cluster
    )
    budget = run_budget(settings, pool_size)
    if budget > pool_size:
        raise ConfigError(f"protocol.budget: must be <= the pool's {pool_size} examples "
                          f"(got {budget}; protocol.pool_fraction caps it)")  # fmt: skip
    if settings.seed_set == "every_class" and settings.seed_size < classes:
        raise ConfigError(
            f"protocol.seed_size: {settings.seed_size} labels cannot give each of the pool's "
            f"{classes} classes one (protocol.seed_set=every_class)"
        )
    others = [make_oracle(i) for i in range(1, settings.oracles)]
    desk = OracleDesk([first, *others], make_oracle, pool_size, budget, settings.cost_per_label)
    return desk, first.pool_view.remote(), pool_size


@dataclass
class ActiveJob:
    """The active-learning loop of the module docstring, from scratch or from a checkpoint."""

    settings: Active
    env: PoolEnvironment
    learner: Learner
    selector: Selector
    seed: int
    start: Any = None

    def run(self, context: RunContext) -> Outcome:
        settings, learner = self.settings, self.learner
        desk, view_ref, pool_size = _open_desk(settings, self.env, context.cluster, self.seed)
        if hasattr(self.selector, "check_pool"):  # a selector's bound on the pool (Cluster-Margin)
            try:
                self.selector.check_pool(pool_size)
            except ValueError as error:
                raise ConfigError(str(error)) from None
        state, round_index, history, selector_state = self.begin_state(desk, pool_size)
        options = context.cluster.worker.ray_options()
        round_context = ray.put(
            RoundContext(
                learner,
                self.selector,
                self.seed,
                context.cluster.worker.num_cpus,
                settings.score_block,
            )
        )
        cadence = Cadence(settings.max_rounds, checkpoint_every=settings.checkpoint_every)
        line = functools.partial(progress_line_of, budget=desk.budget)
        recorder = Recorder(context, history, line, cadence)
        context.begin(history)  # only now: every check that can refuse the run has passed
        params = state.params
        # a stateful selector's state: a Ray reference between rounds, fetched to checkpoint
        state_ref = ray.put(selector_state) if selector_state else None
        while True:
            round_index += 1
            tick = time.perf_counter()
            init = state.params if learner.warm_start else None
            params_ref, metrics_ref = fit_task.options(**options).remote(
                view_ref,
                round_context,
                state.indices,
                state.labels,
                round_index,
                init,
                state.weights,
            )
            record: dict[str, Any] = {"round": round_index, "labels": len(state.indices)}
            remaining = desk.budget - len(state.indices)  # the budget fits the pool
            if remaining > 0:
                k = min(settings.batch_size, remaining)
                blocks = [
                    expose_task.options(**options).remote(
                        view_ref, round_context, params_ref, lo, hi, round_index
                    )
                    for lo, hi in split_range(pool_size, settings.score_block)
                ]
                chosen_ref, weights_ref, state_ref, seconds_ref = select_task.options(
                    **options
                ).remote(
                    round_context, state.indices, state.labels, k, round_index, state_ref, *blocks
                )
                chosen, weights, seconds = ray.get([chosen_ref, weights_ref, seconds_ref])
                self.reveal(state, desk, chosen, weights, k)
                record.update(selected=k, **seconds)
            params = ray.get(params_ref)
            state.params = params if learner.warm_start else None
            record.update(ray.get(metrics_ref))
            record.update(
                labels_spent=desk.spent, label_cost=desk.cost, oracle_restarts=desk.restarts
            )
            record["round_time_s"] = time.perf_counter() - tick
            arrays = functools.partial(checkpoint_arrays, state, desk, state_ref)
            if recorder.step(round_index, record, arrays, done=remaining <= 0):
                steps = f"{len(history)} rounds, {history[-1]['labels']} labels"
                layout = ray.get(layout_task.remote(learner, view_ref))
                weights = unflatten(params, layout)
                return Outcome(params, history, CURVES, x="labels", steps=steps, weights=weights)

    def begin_state(
        self, desk: OracleDesk, pool_size: int
    ) -> tuple[ActiveState, int, list[dict[str, Any]], dict[str, np.ndarray]]:
        """The labelled set, round, history and selector state to start from: a random seed set
        labelled now, or the checkpoint's (the oracles restored to it)."""
        if self.start is None:
            rng, size = seeding.rng(self.seed, "seed_set"), self.settings.seed_size
            if self.settings.seed_set == "every_class":  # drawn by the oracle, which knows
                first = ray.get(desk.oracles[0].every_class_sample.remote(size, rng))
            else:
                first = rng.choice(pool_size, size, replace=False)
            state = ActiveState(np.sort(first), np.zeros(0, np.int64))
            state.labels = desk.label(state.indices)
            return state, 0, [], {}
        arrays, meta = self.start
        desk.restore({k: v for k, v in arrays.items() if k.startswith("oracle/")})
        state = ActiveState(
            arrays["indices"], arrays["labels"], arrays.get("params"), arrays.get("weights")
        )
        selector_state = {
            k.removeprefix("selector/"): v for k, v in arrays.items() if k.startswith("selector/")
        }
        history = meta["history"]
        if history and "selected" not in history[-1]:
            raise CohortError("resume: this run already spent its label budget")
        return state, meta["round"], history, selector_state

    def reveal(
        self, state: ActiveState, desk: OracleDesk, chosen: Any, weights: Any, k: int
    ) -> None:
        """Check the selector's ``k`` choices (and weights), have the oracles label them."""
        name = type(self.selector).__name__
        chosen = check_selection(chosen, desk.revealed, k, name)
        if weights is not None:
            weights = check_weights(weights, k, name)
        state.extend(chosen, desk.label(chosen), weights)


def progress_line_of(record: dict[str, Any], budget: int) -> str:
    """A round's progress line: the labels spent of the run's ``budget``, and its measures."""
    head = f"[round {record['round']:>3}]  labels {record['labels']:>{len(str(budget))}}/{budget}"
    return progress_line(head, record, PROGRESS)


def checkpoint_arrays(
    state: ActiveState, desk: OracleDesk, selector_state: Any
) -> dict[str, np.ndarray]:
    """What an active run's checkpoint holds: the labelled set, the oracles' state, the learner's
    parameters (warm start), the examples' weights and the selector's state (a Ray reference)."""
    arrays = {"indices": state.indices, "labels": state.labels, **desk.state()}
    if state.params is not None:
        arrays["params"] = state.params
    if state.weights is not None:
        arrays["weights"] = state.weights
    if selector_state is not None:
        selector_arrays = ray.get(selector_state) or {}
        arrays.update({f"selector/{k}": v for k, v in selector_arrays.items()})
    return arrays
