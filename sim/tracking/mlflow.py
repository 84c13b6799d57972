"""``logger=mlflow``: an MLflow experiment per ``name``, a run per job, a sweep's jobs nested
under one parent run (made when the multirun starts, :class:`SweepParent`). ``tracking_uri``:
any MLflow server (``http://host:port``), or None for MLflow's own default (``MLFLOW_TRACKING_URI``,
else a local store). Requests give up after ``timeout_s`` and ``retries`` tries: a server that
dies mid-run costs the run one warning, not minutes of retries."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.errors import CohortError
from sim.tracking import RunInfo

SWEEP_TAG = "cohort.sweep_dir"  # the parent run of a sweep, and each job's, carry its folder
PARAM_BATCH = 100  # MLflow takes at most 100 params per request


@dataclass
class MLflow:
    """Params, per-step metrics, final metrics and the run's files as artifacts."""

    tracking_uri: str | None = None
    experiment: str | None = None  # None: the run's ``name``
    timeout_s: int = 10
    retries: int = 1

    def __post_init__(self) -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise CohortError("logger.mlflow: needs mlflow: pip install 'cohort[mlflow]'") from None
        self._client: Any = None
        self._run_id = ""

    def client(self) -> Any:
        """An ``MlflowClient`` whose requests are bounded (time and retries)."""
        from mlflow.tracking import MlflowClient

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.timeout_s))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(self.retries))
        return MlflowClient(tracking_uri=self.tracking_uri)

    def experiment_id(self, client: Any, name: str) -> str:
        found = client.get_experiment_by_name(self.experiment or name)
        return found.experiment_id if found else client.create_experiment(self.experiment or name)

    def start(self, run: RunInfo) -> None:
        from mlflow.entities import Param

        self._client = client = self.client()
        experiment = self.experiment_id(client, run.name)
        tags = {"cohort.run_dir": str(run.run_dir)}
        if run.sweep_dir is not None:
            tags[SWEEP_TAG] = str(run.sweep_dir)
            parent = parent_run(client, experiment, run.sweep_dir)
            if parent is not None:
                tags["mlflow.parentRunId"] = parent
        self._run_id = client.create_run(
            experiment, run_name=run.run_dir.name, tags=tags
        ).info.run_id
        params = [Param(k, v[:6000]) for k, v in run.params.items()]
        for i in range(0, len(params), PARAM_BATCH):
            client.log_batch(self._run_id, params=params[i : i + PARAM_BATCH])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = now_ms()
        batch = [Metric(k, v, stamp, step) for k, v in metrics.items()]
        self._client.log_batch(self._run_id, metrics=batch)

    def finish(self, final: dict[str, float], files: list[Path], status: str) -> None:
        from mlflow.entities import Metric

        stamp = now_ms()
        finals = [Metric(f"final/{k}", v, stamp, 0) for k, v in final.items()]
        if finals:
            self._client.log_batch(self._run_id, metrics=finals)
        for path in files:
            self._client.log_artifact(self._run_id, str(path))
        self._client.set_terminated(self._run_id, status)


def parent_run(client: Any, experiment: str, sweep_dir: Path) -> str | None:
    """The id of the parent run of the sweep in ``sweep_dir`` (made by :class:`SweepParent`)."""
    runs = client.search_runs(
        [experiment],
        filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_dir}' and tags.`cohort.role` = 'sweep'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def now_ms() -> int:
    import time

    return int(time.time() * 1000)


class SweepParent:
    """The parent run of a multirun's jobs: made when it starts (once, before any job, so jobs
    side by side never race to make it), ended when it ends."""

    def __init__(self, logger: MLflow, name: str, sweep_dir: Path) -> None:
        self.client = logger.client()
        experiment = logger.experiment_id(self.client, name)
        tags = {SWEEP_TAG: str(sweep_dir), "cohort.role": "sweep"}
        run = self.client.create_run(experiment, run_name=f"sweep {sweep_dir.name}", tags=tags)
        self.run_id = run.info.run_id

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
