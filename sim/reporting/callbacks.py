"""Hydra callbacks: one Ray for all the jobs of a multirun, and its report at the end."""

from __future__ import annotations

from typing import Any

import ray
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sim.reporting.report import main as report_main
from sim.runtime.config import ClusterConfig
from sim.runtime.session import start_ray


class SharedRay(Callback):
    """Starts (cluster=local) or joins (cluster=remote) Ray once for a whole multirun, so its jobs
    (run one after another in this process) skip Ray's start-up and reuse its warm worker
    processes; shuts it down or disconnects when the multirun ends. Each job then finds Ray
    running and uses it as is, so cluster settings swept per job are not applied: sweep them in
    separate multiruns."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = not ray.is_initialized()
        if self.started:
            cluster = OmegaConf.to_object(OmegaConf.merge(ClusterConfig, config.cluster))
            start_ray(cluster)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if getattr(self, "started", False):
            ray.shutdown()


class MultirunReport(Callback):
    """Runs ``cohort report <sweep dir>`` when a multirun ends (see ``hydra.callbacks.report``)."""

    def __init__(
        self,
        metric: str = "test_accuracy",
        at_rounds: str = "",
        target: float | None = None,
        x: str = "round",
        compare: str | None = None,
        by: str | None = None,
        match: str | None = None,
        scatter: str | None = None,
        slope: str | None = None,
        hold: bool = False,
    ) -> None:
        self.arguments = ["--metric", metric, "--at-rounds", at_rounds, "--x", x]
        if match is not None:
            self.arguments += ["--match", match]
        if target is not None:
            self.arguments += ["--target", str(target)]
        if compare is not None:
            self.arguments += ["--compare", compare]
        if by is not None:
            self.arguments += ["--by", str(by)]
        if scatter is not None:
            self.arguments += ["--scatter", scatter]
        if slope is not None:
            self.arguments += ["--slope", slope]
        if hold:
            self.arguments.append("--hold")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        print(f"\nreport of {config.hydra.sweep.dir}:")
        report_main([str(config.hydra.sweep.dir), *self.arguments])
