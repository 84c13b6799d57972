"""Hydra callbacks: the output folder checked before Hydra creates it, one Ray for all the jobs
of a multirun, and its report at the end."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import ray
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sim.errors import CohortError
from sim.runtime.config import ClusterConfig
from sim.runtime.outputs import check_creatable
from sim.runtime.session import start_ray


class OutputFolder(Callback):
    """Checks that the run's (or the sweep's) folder can be created and written before Hydra
    creates it: a one-line error and exit status 2 instead of Hydra's traceback. ``made``: the
    run folders that did not exist before (Hydra makes them), which a refused run removes."""

    made: set[Path] = set()

    @staticmethod
    def _check(folder: str) -> None:
        try:
            check_creatable(Path(folder).resolve())
        except CohortError as error:
            print(f"cohort: error: {error}", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir)
        folder = Path(config.hydra.run.dir).resolve()
        while not folder.exists():  # the run's folder and the parents Hydra makes for it
            OutputFolder.made.add(folder)
            folder = folder.parent

    @staticmethod
    def remove_empty(folder: Path) -> None:
        """Remove ``folder`` and its parents that this run made, as far as they are empty (a
        refused run changes nothing)."""
        folder = folder.resolve()
        while folder in OutputFolder.made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir)


class SharedRay(Callback):
    """Starts (cluster=local) or joins (cluster=remote) Ray once for a whole multirun, so its jobs
    (run one after another in this process, or side by side by ``hydra/launcher=cohort``) skip
    Ray's start-up and reuse its warm worker processes; shuts it down or disconnects when the
    multirun ends. Each job then finds Ray running and uses it as is, so the settings of Ray's
    own start (``cluster.mode``, ``num_cpus``, ``address``...) swept per job are not applied:
    sweep them in separate multiruns. Side by side, the workers' console output is not echoed
    here (each job writes its own to its folder)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = not ray.is_initialized()
        side_by_side = str(config.hydra.launcher.get("_target_", "")).endswith("CohortLauncher")
        if self.started and not side_by_side:  # the launcher starts it, beside its planning
            cluster = OmegaConf.to_object(OmegaConf.merge(ClusterConfig, config.cluster))
            start_ray(cluster)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if getattr(self, "started", False) and ray.is_initialized():
            ray.shutdown()


class SweepTracking(Callback):
    """With ``logger=mlflow``: the sweep's parent run, made before any job starts (the jobs,
    side by side or in turn, nest under it) and ended when the multirun ends. A tracking server
    that cannot be reached costs one warning; the jobs then run as top-level runs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.parent = None
        node = (config.get("logger") or {}).get("mlflow")
        if node is None or "_target_" not in node:
            return
        from sim.runtime.config import build_component
        from sim.tracking.mlflow import SweepParent

        logger = build_component("logger.mlflow", node)
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        try:
            self.parent = SweepParent(logger, config.name, sweep_dir)
        except Exception as error:  # the jobs still run, and still try their own runs
            print(f"cohort: warning: logger.mlflow: no parent run for the sweep ({error})",
                  file=sys.stderr)  # fmt: skip

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if getattr(self, "parent", None) is not None:
            with contextlib.suppress(Exception):
                self.parent.end()


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
        area: bool = False,
        upto: str | None = None,
        interpolate: bool = False,
    ) -> None:
        self.arguments = ["--metric", metric, "--at-rounds", at_rounds, "--x", x]
        if upto is not None and compare is None:
            raise ValueError("hydra.callbacks.report.upto: needs compare (a tally per budget)")
        if interpolate and target is None:
            raise ValueError("hydra.callbacks.report.interpolate: needs target")
        if upto is not None:
            self.arguments += ["--upto", str(upto)]
        if area:
            self.arguments.append("--area")
        if match is not None:
            self.arguments += ["--match", match]
        if target is not None:
            self.arguments += ["--target", str(target)]
        if interpolate:
            self.arguments.append("--interpolate")
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
        from sim.reporting.report import main as report_main  # scipy, matplotlib: only now

        print(f"\nreport of {config.hydra.sweep.dir}:")
        report_main([str(config.hydra.sweep.dir), *self.arguments])
