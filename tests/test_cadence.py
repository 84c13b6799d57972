"""The cadence every protocol loop shares (sim/protocols/cadence.py), by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sim.protocols.cadence import Cadence, EarlyStopping, Recorder


def test_a_fixed_length_loop_evaluates_and_checkpoints_on_its_schedule_and_at_the_end():
    cadence = Cadence(last=10, eval_every=4, checkpoint_every=6)
    steps = range(1, 11)
    assert [s for s in steps if cadence.evaluates(s)] == [4, 8, 10]
    assert [s for s in steps if cadence.checkpoints(s)] == [6, 10]
    assert [s for s in steps if cadence.ends(s)] == [10]


def test_zero_means_never_but_at_the_end_and_an_open_loop_ends_when_done():
    cadence = Cadence(last=None, eval_every=0, checkpoint_every=0)
    assert not any(cadence.evaluates(s) or cadence.checkpoints(s) for s in range(1, 50))
    assert not cadence.ends(7) and cadence.ends(7, done=True)
    assert cadence.checkpoints(7, done=True)


class Context:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.saved: list[tuple[int, int]] = []  # (step, history length then)

    def record(self, record, line):
        self.lines.append(line)

    def save(self, arrays, step, history):
        self.saved.append((step, len(history)))


def test_the_recorder_records_every_step_and_checkpoints_only_when_due():
    context, history, asked = Context(), [], []

    def arrays():
        asked.append(True)
        return {"x": np.zeros(1)}

    recorder = Recorder(context, history, lambda r: f"[{r['step']}]", Cadence(5, 1, 2))
    ended = [recorder.step(s, {"step": s}, arrays) for s in range(1, 6)]
    assert ended == [False, False, False, False, True]
    assert context.lines == ["[1]", "[2]", "[3]", "[4]", "[5]"] and len(history) == 5
    assert context.saved == [(2, 2), (4, 4), (5, 5)]  # each with the history up to its step
    assert len(asked) == 3  # the arrays are made only for a checkpoint
    assert recorder.step(6, {"step": 6}, arrays, done=True) and context.saved[-1] == (6, 6)


def test_early_stopping_keeps_the_lowest_and_stops_after_patience_evaluations():
    stopping = EarlyStopping(every=10, patience=2)
    taken = []
    for step, loss in ((10, 3.0), (20, 2.0), (30, 2.5), (40, 2.0)):  # 40 ties: not lower
        stopping.update(step, loss, lambda step=step: taken.append(step) or f"state {step}")
        assert stopping.stops(step) == (step == 40)
    assert (stopping.best, stopping.best_step, stopping.state) == (2.0, 20, "state 20")
    assert taken == [10, 20]  # the state is taken only when the loss is the lowest
    assert not stopping.stops(39)  # 1.9 evaluations since the lowest
    never = EarlyStopping(every=10)
    never.update(10, 1.0, dict)
    assert not never.stops(10**6)
    with pytest.raises(ValueError, match="the loss is nan at step 30"):
        stopping.update(30, float("nan"), dict)
