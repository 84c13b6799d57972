"""A run's output directory: resolved config, ``metrics.jsonl``, ``summary.json``,
checkpoints and a plot of the main curves; and the rule for resuming from a checkpoint.

A run claims its directory (an exclusive ``flock`` on the directory itself, which writes
nothing, held until the run ends) before it reads a checkpoint from it or writes to it, and
checks what the directory holds once it holds the claim: two runs never write to one directory,
and a directory that holds anything but a resumable run of the same config is never written to.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import CohortError, ConfigError
from sim.runtime import checkpoint
from sim.runtime.config import moved_target

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.json"
ARTIFACTS = "artifacts"  # what a protocol writes beside its metrics (synthetic samples, ...)
LOG = "log.txt"  # a sweep job's console output, written by the launcher that runs it
MODEL = "model.safetensors"  # the final model's weights by parameter name
OWN = {
    CONFIG,
    METRICS,
    "checkpoints",
    "curves.png",
    ARTIFACTS,
    MODEL,
}  # what a run writes before its summary
RESUMABLE = ("resume", "progress", "output_dir", "cluster", "logger")  # a resume may change them


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (empty dicts are kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == prefix or key.startswith(f"{prefix}.") for prefix in prefixes)


def check_resumable(
    before: dict[str, Any],
    now: dict[str, Any],
    may_change: Iterable[str],
    whose: str = "the checkpoint's",
) -> None:
    """Fail unless two configs differ only in :data:`RESUMABLE` and the dotted keys
    ``may_change`` (e.g. ``protocol.rounds``), naming every other key that differs."""
    free = (*RESUMABLE, *may_change)

    def kept(config: dict[str, Any]) -> dict[str, Any]:
        flat = _flatten(config)
        return {k: current(k, v) for k, v in flat.items() if not _under(k, free)}

    before, now = kept(before), kept(now)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"resume: the config differs from {whose} in {changed}")


def current(key: str, value: Any) -> Any:
    """A config value as this version writes it: a ``_target_`` saved before its module moved
    is the same class under its new path (:data:`sim.runtime.config.MOVED`)."""
    if key.endswith("_target_") and isinstance(value, str):
        return moved_target(value) or value
    return value


class RunDirectory:
    """Owns the files of one run. Refuses to overwrite an earlier run unless resuming, and to
    write into a directory that holds anything else."""

    def __init__(self, path: str | Path, resume: bool) -> None:
        self.path = Path(path).resolve()
        self.resume = resume
        self.checkpoint_path = self.path / "checkpoints" / checkpoint.CHECKPOINT
        self.config: dict[str, Any] = {}
        self._lock: int | None = None
        check_creatable(self.path)
        if self.path.is_dir():
            self._claim()
        try:
            self._check_contents()
        except CohortError:
            self.release()
            raise

    def _files(self) -> list[str]:
        """The names in the directory (Hydra's ``.hydra`` of older runs and a sweep job's
        :data:`LOG` left out)."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name not in (".hydra", LOG))

    def _stopped_early(self, files: list[str]) -> bool:
        """A run of Cohort that stopped before its first checkpoint: its config (a run's)
        written, no checkpoint, no summary, nothing but its own files."""
        if CONFIG not in files or not set(files) <= OWN or self.checkpoint_path.exists():
            return False
        try:
            config = json.loads((self.path / CONFIG).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and {"protocol", "seed"} <= config.keys()

    def _check_contents(self) -> None:
        files = self._files()
        if self.resume:
            if self.checkpoint_path.exists():
                return
            if SUMMARY in files:
                raise CohortError(
                    f"resume=true but the run in {self.path} has finished and left no checkpoint "
                    "to continue from"
                )
            if self._stopped_early(files):
                return  # it starts again
            raise CohortError(
                f"resume=true but there is no checkpoint at {self.checkpoint_path}; "
                "run without resume=true to start afresh"
            )
        if self._stopped_early(files):
            raise CohortError(
                f"{self.path} holds a run that stopped before its first checkpoint: pass "
                "resume=true to start it again, or choose another output directory"
            )
        if METRICS in files or SUMMARY in files or self.checkpoint_path.exists():
            raise CohortError(
                f"{self.path} already holds a run; pass resume=true to continue it or choose "
                "another output directory (hydra.run.dir=... or output_dir=...)"
            )
        if files:
            raise CohortError(
                f"output_dir: {self.path} is not empty (it holds {', '.join(files[:4])}"
                f"{', ...' if len(files) > 4 else ''}); a run writes only into a new or empty "
                "directory"
            )

    def read_checkpoint(
        self, config: dict[str, Any], may_change: Iterable[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The checkpoint (arrays, metadata) if ``config`` may resume it (see check_resumable);
        None for a run that stopped before its first checkpoint (it starts again, from the
        beginning, if its config is this one)."""
        if not self.checkpoint_path.exists():
            try:
                before = json.loads((self.path / CONFIG).read_text())
            except (OSError, ValueError) as error:
                raise CohortError(f"resume: cannot read {self.path / CONFIG} ({error})") from None
            if not isinstance(before, dict):
                raise CohortError(f"resume: {self.path / CONFIG} does not hold a config")
            check_resumable(before, config, may_change, "the stopped run's")
            return None
        try:
            arrays, meta = checkpoint.load(self.checkpoint_path)
            _check_meta(meta)
        except checkpoint.CheckpointError as error:
            raise CohortError(
                f"resume: the checkpoint {self.checkpoint_path} is damaged: {error}; nothing was "
                "loaded or changed"
            ) from None
        check_resumable(meta["config"], config, may_change)
        return arrays, meta

    def prepare(self, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Claim the directory (if it did not exist when the run began, and check it then),
        write the history so far (a resumed run's, up to its checkpoint) and the resolved config
        (as JSON, read by the report)."""
        self.config = config
        try:
            if self._lock is None:
                self.path.mkdir(parents=True, exist_ok=True)
                self._claim()
                self._check_contents()
            (self.path / "checkpoints").mkdir(exist_ok=True)
            with open(self.path / METRICS, "w") as handle:
                handle.writelines(json.dumps(record) + "\n" for record in history)
            text = json.dumps(config, indent=2).encode()
            checkpoint.atomic_write(self.path / CONFIG, lambda handle: handle.write(text))
        except OSError as error:
            raise CohortError(f"output_dir: cannot write the run to {self.path}: {error}") from None

    def _claim(self) -> None:
        handle = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise CohortError(
                f"{self.path} is in use by another run; choose another output directory"
            ) from None
        self._lock = handle

    def release(self) -> None:
        """Let other runs at the directory (the run has ended, or was refused)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def save_checkpoint(
        self, arrays: dict[str, np.ndarray], round_index: int, history: list[dict[str, Any]]
    ) -> None:
        """``arrays`` and, as metadata, the round reached, the history and the run's config."""
        meta = {"round": round_index, "history": history, "config": self.config}
        checkpoint.save(self.checkpoint_path, arrays, meta)

    def write_artifact(self, name: str, text: str) -> Path:
        """``artifacts/<name>`` written atomically; its path."""
        path = self.path / ARTIFACTS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write(path, lambda h: h.write(text.encode()))
        return path

    def write_model(self, weights: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        """``model.safetensors`` (no pickle: named arrays and string ``metadata``), atomically."""
        from safetensors.numpy import save

        data = save({k: np.ascontiguousarray(v) for k, v in weights.items()}, metadata)
        checkpoint.atomic_write(self.path / MODEL, lambda handle: handle.write(data))

    def files(self) -> list[Path]:
        """The run's files worth keeping beside its records (a tracker's artifacts): config,
        summary, final model, curves and the protocol's artifacts."""
        names = [CONFIG, SUMMARY, MODEL, "curves.png"]
        found = [self.path / n for n in names if (self.path / n).is_file()]
        return found + sorted(p for p in (self.path / ARTIFACTS).glob("*") if p.is_file())

    def write_summary(self, summary: dict[str, Any]) -> None:
        path = self.path / SUMMARY
        checkpoint.atomic_write(path, lambda h: h.write(json.dumps(summary, indent=2).encode()))


def _check_meta(meta: Any) -> None:
    """Raise :class:`~sim.runtime.checkpoint.CheckpointError` unless ``meta`` is a run's
    checkpoint header (round, history, config)."""
    if not isinstance(meta, dict):
        problem = f"its header is a {type(meta).__name__}, not an object"
    elif not isinstance(meta.get("round"), int) or meta["round"] < 0:
        problem = f"its header's round is {meta.get('round')!r}, not a count"
    elif not isinstance(meta.get("history"), list) or not all(
        isinstance(r, dict) for r in meta["history"]
    ):
        problem = "its header's history is not a list of records"
    elif not isinstance(meta.get("config"), dict):
        problem = "its header has no config"
    else:
        return
    raise checkpoint.CheckpointError(problem)


def check_creatable(path: Path) -> None:
    """Fail unless ``path`` is a directory, or can be made one, that this process may write."""
    if path.exists() and not path.is_dir():
        raise CohortError(f"output_dir: {path} exists and is not a directory")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CohortError(f"output_dir: cannot create {path} ({ancestor} is not a directory)")
    try:  # the one sure test: make (and remove) a folder where the run's folders would go
        tempfile.TemporaryDirectory(dir=ancestor, prefix=".cohort-probe-").cleanup()
    except OSError as error:
        raise CohortError(f"output_dir: cannot write to {path} ({error.strerror})") from None
