"""``logger=tensorboard``: event files in the run's folder (``tensorboardX``, which Ray Train
installs), so that ``tensorboard --logdir multirun/<sweep>`` compares a sweep's jobs; the config
and the final metrics through TensorBoard's HParams plugin."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.errors import CohortError
from sim.tracking import RunInfo


@dataclass
class TensorBoard:
    """Scalars at each record's step under ``<run dir>/<folder>``."""

    folder: str = "tensorboard"
    flush_secs: int = 10

    def __post_init__(self) -> None:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise CohortError(
                "logger.tensorboard: needs tensorboardX: pip install 'cohort[tensorboard]'"
            ) from None
        self._writer: Any = None
        self._params: dict[str, str] = {}

    def start(self, run: RunInfo) -> None:
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(str(run.run_dir / self.folder), flush_secs=self.flush_secs)
        self._params = run.params

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)

    def finish(self, final: dict[str, float], files: list[Path], status: str) -> None:
        final_metrics = {f"final/{k}": v for k, v in final.items()}
        if final_metrics:
            self._writer.add_hparams(self._params, final_metrics, name="hparams")
        self._writer.close()
