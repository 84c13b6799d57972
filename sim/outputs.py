"""A run's output directory: resolved config, ``metrics.jsonl``, ``summary.json``,
checkpoints and a plot of the main curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sim import checkpoint
from sim.errors import CohortError

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


class RunDirectory:
    """Owns the files of one run. Refuses to overwrite an earlier run unless resuming."""

    def __init__(self, path: str | Path, resume: bool) -> None:
        self.path = Path(path).resolve()
        self.checkpoint_path = self.path / "checkpoints" / checkpoint.CHECKPOINT
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

    def prepare(self, config: dict[str, Any]) -> None:
        """Create the folders and write the resolved config (as JSON, read by the report)."""
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(json.dumps(config, indent=2))

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` from a history (used when resuming from a checkpoint)."""
        with open(self.path / METRICS, "w") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in history)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        path = self.path / SUMMARY
        checkpoint.atomic_write(path, lambda h: h.write(json.dumps(summary, indent=2).encode()))
