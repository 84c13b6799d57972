"""``python -m sim`` / ``cohort``: the Hydra app; ``cohort report DIR...``: tables and plots."""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from sim.errors import CohortError, one_line
from sim.reporting.callbacks import OutputFolder
from sim.runtime.config import CONF_DIR, register_schemas, sweep_in_jobs, use_user_plugins
from sim.runtime.run import hydra_task

register_schemas()
INTERRUPTED = (
    "cohort: interrupted; to go on from the last checkpoint, run the same command with "
    "resume=true (and hydra.run.dir, or hydra.sweep.dir for a sweep, set to its folder)"
)


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> float | None:
    try:
        return hydra_task(cfg)
    except CohortError as error:
        sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
        folder = Path(cfg.output_dir or HydraConfig.get().runtime.output_dir).resolve()
        if sweeping:
            OutputFolder.made.add(folder)  # a job's own folder, made by Hydra for it
        OutputFolder.remove_empty(folder)
        print(f"cohort: error: {error}", file=sys.stderr)
        if sweeping:
            raise  # a job of a sweep: recorded by the sweeper, and the next job runs
        sys.exit(2)


def exit_now(status: int = 0) -> None:
    """End the process as a normal exit does, less the interpreter's teardown: the exit
    handlers run, logs and standard streams are flushed, and then the process ends without
    freeing each module of Ray, Hydra, numpy... one by one (about 0.5 s here, on every run).
    Only once everything the run writes is written and closed."""
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def show_help() -> None:
    """Hydra's ``--help`` without the internal ``schema/*`` groups (each option's fields and
    defaults, which the options themselves load; not for picking), then exit."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        app()
    print("\n".join(line for line in text.getvalue().splitlines()
                    if not line.startswith("schema/")))  # fmt: skip
    sys.exit(0)


def main() -> None:
    """``cohort`` / ``python -m sim``: runs, then ends this process (:func:`exit_now`)."""
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        from sim.reporting.report import main as report_main

        sys.exit(report_main(sys.argv[2:]))
    try:
        use_user_plugins(sys.argv[1:])
    except CohortError as error:
        print(f"cohort: error: {error}", file=sys.stderr)
        sys.exit(2)
    if {"--help", "-h"} & set(sys.argv[1:]):
        show_help()
    sys.argv[1:] = sweep_in_jobs(sys.argv[1:])
    full_errors = os.environ.get("HYDRA_FULL_ERROR") == "1"  # as Hydra reads it
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors; a composition error is one line
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C: what was checkpointed stays, and says how to go on
        print(INTERRUPTED, file=sys.stderr, flush=True)
        exit_now(130)
    except CompactHydraException as error:  # an override Hydra cannot apply, an unknown option
        if full_errors:
            raise
        print(f"cohort: error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    sweep = sys.modules.get("sim.runtime.sweep")  # hydra/launcher=cohort: did a job fail?
    exit_now(1 if sweep is not None and sweep.failed_jobs else 0)


if __name__ == "__main__":
    main()
