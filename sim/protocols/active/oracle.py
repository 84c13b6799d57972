"""Labeling oracles: the only actors that hold a pool's hidden labels.

An :class:`Oracle` actor loads the pool itself (so the labels never pass through the driver or
the object store), hands out the label-free :class:`~sim.pool.PoolView`, and answers
``label(indices)``. :class:`OracleDesk` (driver side) fronts one or more oracles: it checks a
whole request against the pool, the revealed set and the budget *before* anything is charged,
splits it over the oracles (they answer in parallel), counts labels and cost, and restarts an
oracle that died from the state it had (revealed set and count), which is also what the run's
checkpoint stores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from sim import seeding
from sim.errors import CohortError
from sim.interfaces.active import PoolEnvironment, PoolView

log = logging.getLogger(__name__)


class LabelingError(CohortError):
    """A label request the oracle refuses; nothing was charged."""


def check_query(indices: Any, revealed: np.ndarray, remaining: int | None) -> np.ndarray:
    """``indices`` as int64 if every one is in range, asked once and not revealed before, and
    there are at most ``remaining`` of them (None: no budget); else :class:`LabelingError`."""
    query = np.asarray(indices)
    if query.ndim != 1 or not (query.size == 0 or np.issubdtype(query.dtype, np.integer)):
        raise LabelingError(f"label: indices must be a 1-d integer array (got {query!r:.80})")
    query = query.astype(np.int64)
    pool_size = len(revealed)
    outside = query[(query < 0) | (query >= pool_size)]
    if outside.size:
        raise LabelingError(
            f"label: indices out of range [0, {pool_size}): {outside[:10].tolist()}"
        )
    values, counts = np.unique(query, return_counts=True)
    if (counts > 1).any():
        raise LabelingError(
            f"label: indices asked twice in one request: {values[counts > 1][:10].tolist()}"
        )
    again = query[revealed[query]]
    if again.size:
        raise LabelingError(f"label: indices already labeled: {again[:10].tolist()}")
    if remaining is not None and len(query) > remaining:
        raise LabelingError(
            f"label: {len(query)} labels asked but only {remaining} remain in the budget"
        )
    return query


def noisy_answers(
    labels: np.ndarray, num_classes: int, flip_rate: float, rng: np.random.Generator
) -> np.ndarray:
    """The labels an annotator gives: each flipped with probability ``flip_rate`` to a uniformly
    drawn *other* class, fixed per example (asking again would give the same answer)."""
    flip = rng.random(len(labels)) < flip_rate
    shift = rng.integers(1, max(num_classes, 2), size=len(labels))
    return np.where(flip, (labels + shift) % num_classes, labels).astype(np.int64)


def every_class_sample(answers: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` distinct pool indices, sorted: one uniformly from each class of ``answers`` (in
    the order of the classes), the rest uniformly from the remaining points."""
    classes = np.unique(answers)
    if size < len(classes):
        raise ValueError(f"every_class_sample: {size} points for {len(classes)} classes")
    first = np.array([rng.choice(np.flatnonzero(answers == c)) for c in classes], np.int64)
    rest = rng.choice(np.setdiff1d(np.arange(len(answers)), first), size - len(first), False)
    return np.sort(np.concatenate([first, rest]))


@ray.remote
class Oracle:
    """One annotator: the pool's hidden labels (with its own fixed noise) and what it revealed."""

    def __init__(self, env: PoolEnvironment, seed: int, oracle_id: int, flip_rate: float) -> None:
        data = env.load_pool()
        noise = seeding.rng(seed, "label_noise", oracle_id)
        self._answers = noisy_answers(data.y, data.num_classes, flip_rate, noise)
        self._view = data.view()
        self._revealed = np.zeros(len(data.y), bool)

    def describe(self) -> tuple[int, int]:
        """``(pool size, number of classes)``."""
        return len(self._revealed), self._view.num_classes

    def count(self, label: int) -> int:
        """How many pool points this annotator answers ``label`` for: the simulator's ground
        truth for stopping rules and metrics (covering), never handed to an algorithm."""
        return int((self._answers == label).sum())

    def pool_view(self) -> PoolView:
        """The label-free view; the caller owns the returned object."""
        return self._view

    def label(self, indices: np.ndarray) -> np.ndarray:
        query = check_query(indices, self._revealed, None)
        self._revealed[query] = True
        return self._answers[query]

    def revealed(self) -> np.ndarray:
        return np.flatnonzero(self._revealed)

    def every_class_sample(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """A seed set with a label of every class (:func:`every_class_sample`); it reveals
        nothing (the protocol then asks for its labels)."""
        return every_class_sample(self._answers, size, rng)

    def restore(self, revealed: np.ndarray) -> None:
        """Mark ``revealed`` as answered (after a restart or on resume)."""
        self._revealed[:] = False
        self._revealed[np.asarray(revealed, np.int64)] = True


def start_first_oracle(
    env: PoolEnvironment, seed: int, flip_rate: float, cluster: Any
) -> tuple[Callable[[int], Any], Any, int, int]:
    """``make_oracle(i)`` (oracle ``i`` of the pool ``env``, with ``cluster.oracle`` resources),
    oracle 0 started, and the pool's size and number of classes as that oracle loaded them (a
    pool it cannot load: one line naming the env)."""
    from sim.runtime.workers import wait_started

    options = cluster.oracle.ray_options()

    def make_oracle(i: int) -> Any:
        return Oracle.options(**options).remote(env, seed, i, flip_rate)

    first = make_oracle(0)
    wait_started([first], "oracle", cluster)
    try:
        pool_size, num_classes = ray.get(first.describe.remote())
    except ray.exceptions.RayActorError as error:
        raise CohortError(f"env: the oracle could not load the pool: {error}") from None
    return make_oracle, first, pool_size, num_classes


class OracleDesk:
    """The driver's front to the oracle actors ``oracles``, sharing one label budget.

    A request is split into contiguous chunks, one per oracle, answered in parallel. Cost is
    ``cost_per_label`` per answered label. ``make_oracle(i)`` builds a replacement for oracle
    ``i`` if it dies; the replacement is restored to what ``i`` had revealed.
    """

    def __init__(
        self,
        oracles: list[Any],
        make_oracle: Callable[[int], Any],
        pool_size: int,
        budget: int,
        cost_per_label: float,
    ) -> None:
        self.oracles = list(oracles)
        self.make_oracle = make_oracle
        self.budget = budget
        self.cost_per_label = cost_per_label
        self.revealed = np.zeros(pool_size, bool)
        self.by_oracle: list[list[int]] = [[] for _ in self.oracles]
        self.restarts = 0

    @property
    def spent(self) -> int:
        return int(self.revealed.sum())

    @property
    def cost(self) -> float:
        return self.spent * self.cost_per_label

    def label(self, indices: Any) -> np.ndarray:
        """Labels of ``indices``, checked as a whole first (an error charges nothing)."""
        query = check_query(indices, self.revealed, self.budget - self.spent)
        chunks = np.array_split(query, len(self.oracles))
        answers = [self._ask(i, chunk) for i, chunk in enumerate(chunks)]
        labels = np.concatenate(
            [
                self._get(i, chunk, ref)
                for i, (chunk, ref) in enumerate(zip(chunks, answers, strict=True))
            ]
        )
        self.revealed[query] = True
        for i, chunk in enumerate(chunks):
            self.by_oracle[i].extend(chunk.tolist())
        return labels

    def _ask(self, i: int, chunk: np.ndarray):
        return self.oracles[i].label.remote(chunk)

    def _get(self, i: int, chunk: np.ndarray, ref) -> np.ndarray:
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError:
            log.warning("oracle %d died; restarting it from its revealed set", i)
            self.restarts += 1
            self.oracles[i] = self.make_oracle(i)
            ray.get(self.oracles[i].restore.remote(np.asarray(self.by_oracle[i], np.int64)))
            return ray.get(self._ask(i, chunk))

    def state(self) -> dict[str, np.ndarray]:
        """Arrays for the run's checkpoint: what each oracle revealed, in order."""
        return {f"oracle/{i}": np.asarray(ids, np.int64) for i, ids in enumerate(self.by_oracle)}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        if len(state) != len(self.oracles):
            raise CohortError(
                f"resume: the checkpoint has {len(state)} oracles, the config {len(self.oracles)}"
            )
        for i, oracle in enumerate(self.oracles):
            ids = state[f"oracle/{i}"]
            self.by_oracle[i] = ids.tolist()
            self.revealed[ids] = True
            ray.get(oracle.restore.remote(ids))
