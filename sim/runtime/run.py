"""``sim.run``: build the protocol and the components the config names, let the protocol check
and prepare them, run it on a Ray session, and write the outputs. Knows no protocol by name."""

from __future__ import annotations

import hashlib
import importlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import ray
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sim.errors import ConfigError
from sim.interfaces.protocol import Outcome, Setup
from sim.runtime.config import (
    COMPONENTS,
    CONF_DIR,
    ClusterConfig,
    build_component,
    check_run_config,
    component_config,
    register_schemas,
    use_user_plugins,
)
from sim.runtime.outputs import RunDirectory
from sim.runtime.session import ray_session, remote_address
from sim.runtime.workers import check_roles
from sim.tracking import RunInfo, Trackers, flatten


@dataclass
class Result:
    """What a run returns: resolved config, per-round history, final metrics, output dir."""

    config: dict[str, Any]
    history: list[dict[str, Any]]
    final: dict[str, float]
    output_dir: Path
    params: np.ndarray
    wall_time_s: float


@dataclass
class Context:
    """The :class:`~sim.interfaces.protocol.RunContext` of one run: its folder, and the trackers
    (``logger=``) that get what the folder gets."""

    seed: int
    cluster: ClusterConfig
    run_dir: RunDirectory
    config: dict[str, Any]
    progress: bool
    trackers: Trackers = field(default_factory=lambda: Trackers({}))
    sweep_dir: Path | None = None
    started: bool = False

    def begin(self, history: list[dict[str, Any]]) -> None:
        self.run_dir.prepare(self.config, history)
        info = RunInfo(self.config["name"], self.run_dir.path, flatten(self.config), self.sweep_dir)
        self.trackers.start(info)
        self.started = True
        for record in history:  # a resumed run's records so far
            self.trackers.log(record)

    def record(self, record: dict[str, Any], line: str) -> None:
        self.run_dir.append_metrics(record)
        self.trackers.log(record)
        if self.progress:
            print(line, flush=True)

    def finish(self, final: dict[str, float], status: str = "FINISHED") -> None:
        """The trackers get the final metrics and the run's files (after its summary)."""
        if self.started:
            self.trackers.finish(final, self.run_dir.files(), status)

    def save(self, arrays: dict[str, np.ndarray], round_index: int, history: list) -> None:
        self.run_dir.save_checkpoint(arrays, round_index, history)

    def write(self, name: str, text: str) -> Path:
        return self.run_dir.write_artifact(name, text)


class Beside:
    """``fn(*args)`` in a thread, started at once: work that overlaps what the main thread does
    meanwhile (Ray's start and shutdown, which must run in the main thread). ``daemon``: a
    thread that never holds up the process's exit (Ctrl-C)."""

    def __init__(self, fn: Callable[..., Any], *args: Any, daemon: bool = True) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._call, args=(fn, *args), daemon=daemon)
        self._thread.start()

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._value = fn(*args)
        except BaseException as error:  # raised in the caller's thread by result()
            self._error = error

    def done(self, within: float | None = None) -> bool:
        """Whether it has finished, waiting at most ``within`` seconds (None: until it has)."""
        self._thread.join(within)
        return not self._thread.is_alive()

    def result(self) -> Any:
        """Its return value once it has finished; if it failed, its exception, raised here."""
        self.done()
        if self._error is not None:
            raise self._error
        return self._value


# ``prepare`` runs beside Ray's start; alone for this long first, so that a refusal that comes
# at once (most of them: they need no data) still comes before Ray starts.
PREPARE_HEAD_START_S = 0.5


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``python -m sim OVERRIDES...`` would run, composed without starting anything."""
    register_schemas()
    use_user_plugins(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose("config", overrides=list(overrides))


def run(cfg: DictConfig | Sequence[str] = (), *, overrides: Sequence[str] | None = None) -> Result:
    """Run one experiment from a composed config or a list of Hydra overrides."""
    if not isinstance(cfg, DictConfig):
        overrides = list(cfg)
        cfg = compose(overrides)
    return run_config(cfg, overrides=list(overrides or []))


def hydra_task(cfg: DictConfig) -> float | None:
    """The Hydra app's task: run ``cfg`` in Hydra's output folder (``output_dir`` if given),
    with the command line's overrides recorded; returns the final value of ``cfg.objective``
    (None without one), which a sweeper such as Optuna's optimises."""
    hydra_cfg = HydraConfig.get()
    folder = Path(cfg.output_dir or hydra_cfg.runtime.output_dir)
    sweep = str(Path(hydra_cfg.sweep.dir).resolve()) if hydra_cfg.mode == RunMode.MULTIRUN else None
    overrides = list(hydra_cfg.overrides.task)
    result = run_config(cfg, overrides=overrides, output_dir=str(folder), sweep_dir=sweep)
    if cfg.objective is None:
        return None
    if cfg.objective not in result.final:
        raise ConfigError(
            f"objective: the run has no final metric {cfg.objective!r} (it has: "
            f"{', '.join(sorted(result.final))})"
        )
    return result.final[cfg.objective]


def _default_output_dir(name: str) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    return Path("outputs") / name / stamp


def run_config(
    cfg: DictConfig,
    overrides: Sequence[str] = (),
    output_dir: str | None = None,
    sweep_dir: str | None = None,
) -> Result:
    """Validate everything, then run. Nothing is written before every check has passed: the
    protocol's ``prepare`` and its own checks on the cluster.

    The config's own checks come first; then ``prepare`` (data loading and the checks that need
    the data) runs in a thread beside Ray's start, after a head start of
    :data:`PREPARE_HEAD_START_S` in which a quick refusal stops the run before Ray starts, and
    matplotlib is imported beside it too. The summary and the plot are written beside Ray's
    shutdown."""
    start_time = time.perf_counter()
    check_run_config(cfg)
    protocol = build_component("protocol", cfg.protocol)
    components = {g: build_component(g, cfg[g]) for g in COMPONENTS if cfg[g] is not None}
    trackers = build_trackers(cfg.logger)
    config = OmegaConf.to_container(cfg, resolve=True)
    config["protocol"] = component_config(cfg.protocol._target_, protocol)
    for group, component in components.items():
        config[group] = component_config(cfg[group]._target_, component)
    run_dir = RunDirectory(
        output_dir or cfg.output_dir or _default_output_dir(cfg.name), cfg.resume
    )
    writing: Beside | None = None
    try:  # the run directory is claimed from here on: release it whatever happens
        resumable = [f"protocol.{key}" for key in protocol.resumable]
        start = run_dir.read_checkpoint(config, resumable) if cfg.resume else None
        if cfg.resume and start is None and cfg.progress:
            print(f"resume: {run_dir.path} has no checkpoint yet; the run starts again", flush=True)
        cluster = OmegaConf.to_object(cfg.cluster)
        ray_up = ray.is_initialized()  # a test session's or a multirun's Ray: used as it is
        if cluster.mode == "remote" and not ray_up:
            remote_address(cluster)
        preparing = Beside(protocol.prepare, Setup(components, cfg.seed, start))
        if ray_up or preparing.done(within=PREPARE_HEAD_START_S):
            preparing.result()  # nothing to overlap, or done: a refusal is raised before Ray
        if not ray_up:  # matplotlib, for the plot: Ray's start leaves a core idle
            Beside(importlib.import_module, "sim.reporting.plotting")
        with ray_session(cluster, worker_setup=getattr(protocol, "ray_train", False)):
            job = preparing.result()
            check_roles(cluster, protocol)
            context = Context(cfg.seed, cluster, run_dir, config, cfg.progress, trackers,
                              Path(sweep_dir) if sweep_dir else None)  # fmt: skip
            try:
                outcome = job.run(context)
            except BaseException:
                context.finish({}, "FAILED")
                raise
            wall_time = time.perf_counter() - start_time
            outputs = (run_dir, outcome, config, overrides, wall_time, cfg.name)
            writing = Beside(write_outputs, *outputs, daemon=False)
        final = writing.result()
        context.finish(final)
    finally:
        if writing is not None:
            writing.done()  # never release the folder while its summary is being written
        run_dir.release()
    history = outcome.history
    if cfg.progress:
        shown = ", ".join(f"{k} {final[k]:.4f}" for k in outcome.curves if k in final)
        steps = outcome.steps or f"{len(history)} rounds"
        shown = f"; {shown}" if shown else ""
        print(f"done: {steps} in {wall_time:.1f} s{shown}; outputs in {run_dir.path}", flush=True)
    return Result(
        config=config,
        history=history,
        final=final,
        output_dir=run_dir.path,
        params=outcome.params,
        wall_time_s=wall_time,
    )


def build_trackers(loggers: DictConfig | None) -> Trackers:
    """The trackers ``logger=`` names (``jsonl``, the run's own files, needs none), built and
    checked before anything starts (a missing package: one line naming the extra)."""
    return Trackers({
        name: build_component(f"logger.{name}", node)
        for name, node in (loggers or {}).items()
        if isinstance(node, DictConfig) and "_target_" in node
    })  # fmt: skip


def write_outputs(
    run_dir: RunDirectory,
    outcome: Outcome,
    config: dict[str, Any],
    overrides: Sequence[str],
    wall_time: float,
    title: str,
) -> dict[str, float]:
    """The run's summary and plot; returns its final metrics (the last record's floats)."""
    history = outcome.history
    final = {k: v for k, v in history[-1].items() if isinstance(v, float) and not k.endswith("_s")}
    summary = {
        "config": config,
        "overrides": list(overrides),
        "final": final,
        "rounds": len(history),
        "x": outcome.x,  # the axis its records count (cohort report names it)
        "wall_time_s": wall_time,
        "params_sha256": hashlib.sha256(outcome.params.tobytes()).hexdigest(),
        **outcome.summary,
    }
    if outcome.weights is not None:  # before the summary, which says the run is done
        metadata = {
            "config_sha256": config_sha256(config),
            "params_sha256": summary["params_sha256"],
        }
        run_dir.write_model(outcome.weights, metadata)
    run_dir.write_summary(summary)
    from sim.reporting.plotting import plot_curves  # matplotlib: only once there is a plot

    plot_curves(history, run_dir.path / "curves.png", outcome.curves, title=title, x=outcome.x)
    return final


def config_sha256(config: dict[str, Any]) -> str:
    """The SHA-256 of the resolved config as ``config.json`` holds it (keys sorted)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
