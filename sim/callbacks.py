"""Hydra callbacks: at the end of a multirun, write its report (table and comparison plot)."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sim.report import main as report_main


class MultirunReport(Callback):
    """Runs ``cohort report <sweep dir>`` when a multirun ends (see ``hydra.callbacks.report``)."""

    def __init__(
        self, metric: str = "test_accuracy", at_rounds: str = "", target: float | None = None
    ) -> None:
        self.arguments = ["--metric", metric, "--at-rounds", at_rounds]
        if target is not None:
            self.arguments += ["--target", str(target)]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        print(f"\nreport of {config.hydra.sweep.dir}:")
        report_main([str(config.hydra.sweep.dir), *self.arguments])
