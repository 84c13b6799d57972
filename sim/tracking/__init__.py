"""Where a run's records go besides its own files: the ``logger`` config group.

``metrics.jsonl``, ``summary.json`` and the rest of the run's folder are always written and are
the source of truth (``logger=jsonl``, the default, adds nothing to them). ``logger=tensorboard``
and ``logger=mlflow`` (or a list, ``logger=[tensorboard,mlflow]``) also receive, through the
run's :class:`~sim.interfaces.protocol.RunContext` (no protocol knows of them): the resolved
config as parameters (flattened keys, ``algorithm.client_lr``), every record's numeric fields as
scalars at the record's step, and at the end the final metrics and the run's files. A tracker
that fails (its server gone) never fails the run: it is dropped with one warning.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# The key of a record's step: the first a record has (teacher-student and pre-training steps,
# labels of an active run, queries of a covering run, else rounds).
STEP_KEYS = ("step", "labels", "queries", "round")


@dataclass(frozen=True)
class RunInfo:
    """What a tracker knows of a run when it starts."""

    name: str  # the experiment's name (``name``)
    run_dir: Path
    params: dict[str, str]  # the resolved config, flattened
    sweep_dir: Path | None = None  # the multirun's folder, for a job of a sweep


class Logger(Protocol):
    """A tracker (a dataclass named by ``_target_`` in ``conf/logger/``)."""

    def start(self, run: RunInfo) -> None: ...

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def finish(self, final: dict[str, float], files: list[Path], status: str) -> None: ...


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"algorithm": {"client_lr": 0.05}}`` -> ``{"algorithm.client_lr": "0.05"}``."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def scalars(record: Mapping[str, Any]) -> tuple[dict[str, float], int | None]:
    """A record's finite numbers (bools and the step key left out) and its step."""
    key = next((k for k in STEP_KEYS if k in record), None)
    step = int(record[key]) if key is not None else None
    metrics = {
        k: float(v)
        for k, v in record.items()
        if k != key and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    return metrics, step


class Trackers:
    """The run's trackers: each call goes to every tracker still up; a tracker that raises is
    dropped with one warning on stderr, and the run goes on (its own files hold everything)."""

    def __init__(self, loggers: Mapping[str, Logger]) -> None:
        self.loggers = dict(loggers)
        self.records = 0

    def _each(self, method: str, *args: Any) -> None:
        for name, logger in list(self.loggers.items()):
            try:
                getattr(logger, method)(*args)
            except Exception as error:  # a tracker never fails the run
                del self.loggers[name]
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                print(
                    f"cohort: warning: logger.{name} failed ({type(error).__name__}: "
                    f"{first[:200]}); the run goes on without it, its files are complete",
                    file=sys.stderr,
                    flush=True,
                )

    def start(self, run: RunInfo) -> None:
        self._each("start", run)

    def log(self, record: Mapping[str, Any]) -> None:
        if not self.loggers:  # logger=jsonl: nothing to do per record
            return
        metrics, step = scalars(record)
        self.records += 1
        self._each("log", metrics, self.records if step is None else step)

    def finish(self, final: dict[str, float], files: list[Path], status: str) -> None:
        self._each("finish", final, files, status)
