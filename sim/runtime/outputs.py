"""A run's output directory: resolved config, ``metrics.jsonl``, ``summary.json``,
checkpoints and a plot of the main curves; and the rule for resuming from a checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import CohortError, ConfigError
from sim.runtime import checkpoint

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
RESUMABLE = ("resume", "progress", "output_dir", "cluster")  # run-level keys a resume may change


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


def check_resumable(before: dict[str, Any], now: dict[str, Any], may_change: Iterable[str]) -> None:
    """Fail unless two configs differ only in :data:`RESUMABLE` and the dotted keys
    ``may_change`` (e.g. ``protocol.rounds``), naming every other key that differs."""
    free = (*RESUMABLE, *may_change)

    def kept(config: dict[str, Any]) -> dict[str, Any]:
        flat = _flatten(config)
        return {k: v for k, v in flat.items() if not _under(k, free)}

    before, now = kept(before), kept(now)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"resume: the config differs from the checkpoint's in {changed}")


class RunDirectory:
    """Owns the files of one run. Refuses to overwrite an earlier run unless resuming."""

    def __init__(self, path: str | Path, resume: bool) -> None:
        self.path = Path(path).resolve()
        self.checkpoint_path = self.path / "checkpoints" / checkpoint.CHECKPOINT
        self.config: dict[str, Any] = {}
        if resume and not self.checkpoint_path.exists():
            raise CohortError(
                f"resume=true but there is no checkpoint at {self.checkpoint_path}; "
                "run without resume=true to start afresh"
            )
        if not resume and ((self.path / METRICS).exists() or (self.path / SUMMARY).exists()):
            raise CohortError(
                f"{self.path} already holds a run; pass resume=true to continue it or choose "
                "another output directory (hydra.run.dir=... or output_dir=...)"
            )

    def read_checkpoint(
        self, config: dict[str, Any], may_change: Iterable[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The checkpoint (arrays, metadata) if ``config`` may resume it (see check_resumable)."""
        arrays, meta = checkpoint.load(self.checkpoint_path)
        check_resumable(meta["config"], config, may_change)
        return arrays, meta

    def prepare(self, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Create the folders, write the resolved config (as JSON, read by the report) and the
        history so far (a resumed run's, up to its checkpoint)."""
        self.config = config
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(json.dumps(config, indent=2))
        with open(self.path / METRICS, "w") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in history)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def save_checkpoint(
        self, arrays: dict[str, np.ndarray], round_index: int, history: list[dict[str, Any]]
    ) -> None:
        """``arrays`` and, as metadata, the round reached, the history and the run's config."""
        meta = {"round": round_index, "history": history, "config": self.config}
        checkpoint.save(self.checkpoint_path, arrays, meta)

    def write_summary(self, summary: dict[str, Any]) -> None:
        path = self.path / SUMMARY
        checkpoint.atomic_write(path, lambda h: h.write(json.dumps(summary, indent=2).encode()))
