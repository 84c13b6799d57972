"""The cadence every protocol's loop shares, so that a loop reads as what its protocol does in one
step: evaluate every ``eval_every`` steps and at the last, record each step (the history,
``metrics.jsonl``, a progress line), checkpoint every ``checkpoint_every`` steps and when the loop
ends, end at the last step or when the protocol says it is done (a label budget spent, every
positive found, a held-out loss that stopped improving). No Ray here: the Ray Train loops use
:class:`Cadence` on their workers too."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.interfaces.protocol import RunContext


@dataclass(frozen=True)
class Cadence:
    """When a loop of steps 1, 2, ... evaluates, checkpoints and ends. ``last``: its final step
    (None: it ends only when done); ``eval_every``, ``checkpoint_every``: 0 is never (but at the
    end)."""

    last: int | None = None
    eval_every: int = 1
    checkpoint_every: int = 0

    def evaluates(self, step: int) -> bool:
        """Evaluate after ``step``: every ``eval_every`` steps and at the last."""
        return step == self.last or (self.eval_every > 0 and step % self.eval_every == 0)

    def ends(self, step: int, done: bool = False) -> bool:
        """The loop ends after ``step``: it is done, or ``step`` is the last."""
        return done or (self.last is not None and step >= self.last)

    def checkpoints(self, step: int, done: bool = False) -> bool:
        """Checkpoint after ``step``: every ``checkpoint_every`` steps and when the loop ends."""
        every = self.checkpoint_every > 0 and step % self.checkpoint_every == 0
        return every or self.ends(step, done)


@dataclass
class EarlyStopping:
    """Early stopping on a loss evaluated every ``every`` steps: the loop stops once
    ``patience`` evaluations have passed without a lower loss (None: never), and the state of
    the lowest is kept (``best_step``, ``state``)."""

    every: int
    patience: int | None = None
    best: float = math.inf
    best_step: int = 0
    state: Any = None

    def update(self, step: int, loss: float, state: Callable[[], Any]) -> None:
        """Take the loss evaluated after ``step``; ``state()`` is kept when it is the lowest.
        A loss that is not finite raises ValueError."""
        if not math.isfinite(loss):
            raise ValueError(f"the loss is {loss} at step {step}")
        if loss < self.best:
            self.best, self.best_step, self.state = loss, step, state()

    def stops(self, step: int) -> bool:
        """Whether the loop stops after ``step``."""
        return self.patience is not None and step - self.best_step >= self.patience * self.every


@dataclass
class Recorder:
    """A loop's records: each goes into ``history`` and to the run (``context.record``) with the
    progress line ``line(record)``; :meth:`step` also checkpoints on the ``cadence``."""

    context: RunContext
    history: list[dict[str, Any]]
    line: Callable[[dict[str, Any]], str]
    cadence: Cadence = Cadence()

    def record(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        self.show(record)

    def show(self, record: dict[str, Any]) -> None:
        """Write ``record`` to the run and print its line (a record the history already holds,
        completed later: the teacher-student protocol's last, with its final measures)."""
        self.context.record(record, self.line(record))

    def step(
        self,
        step: int,
        record: dict[str, Any],
        arrays: Callable[[], dict[str, np.ndarray]],
        done: bool = False,
    ) -> bool:
        """Record ``step``; checkpoint ``arrays()`` (called only then) when the cadence says so;
        True when the loop ends here."""
        self.record(record)
        if self.cadence.checkpoints(step, done):
            self.context.save(arrays(), step, self.history)
        return self.cadence.ends(step, done)
