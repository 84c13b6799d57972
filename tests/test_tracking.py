"""The ``logger`` group: TensorBoard event files and a real MLflow server get what the run's own
files get; a tracker that fails never fails the run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sim
from sim.tracking import Trackers, flatten, scalars
from tests.conftest import REPO, run_cli, start_cli

mlflow = pytest.importorskip("mlflow")


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_flatten_and_a_record_s_scalars_at_its_step():
    assert flatten({"algorithm": {"client_lr": 0.05, "n": [1, 2]}, "seed": 0, "e": {}}) == {
        "algorithm.client_lr": "0.05",
        "algorithm.n": "[1, 2]",
        "seed": "0",
        "e": "{}",
    }
    record = {"round": 3, "labels": 40, "test_accuracy": 0.5, "covered": True, "loss": None,
              "x": float("nan"), "note": "text"}  # fmt: skip
    assert scalars(record) == ({"round": 3.0, "test_accuracy": 0.5}, 40)  # active: labels
    assert scalars({"round": 2, "loss": 1.5}) == ({"loss": 1.5}, 2)


def test_a_failing_tracker_is_dropped_with_one_warning(capsys):
    class Broken:
        calls = 0

        def start(self, run):
            pass

        def log(self, metrics, step):
            Broken.calls += 1
            raise ConnectionError("server gone\nsecond line")

        def finish(self, final, files, status):
            raise AssertionError("never called once dropped")

    trackers = Trackers({"broken": Broken()})
    for step in range(3):
        trackers.log({"round": step, "loss": 1.0})
    trackers.finish({}, [], "FINISHED")
    warnings = capsys.readouterr().err.strip().splitlines()
    assert Broken.calls == 1 and len(warnings) == 1
    assert warnings[0].startswith("cohort: warning: logger.broken failed (ConnectionError: server")


def test_tensorboard_event_files_hold_the_same_values_as_metrics_jsonl(ray_session, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    sim.run(["logger=[jsonl,tensorboard]", "protocol.rounds=4", "protocol.eval_every=2",
             "progress=false", f"output_dir={out}"])  # fmt: skip
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for key in ("train_loss", "test_accuracy"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        expected = [(r["round"], r[key]) for r in records(out) if key in r]
        assert [s for s, _ in logged] == [s for s, _ in expected]
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert (out / "tensorboard" / "hparams").is_dir()  # the config and final metrics (HParams)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """A real ``mlflow server`` (SQLite store, artifacts served) on 127.0.0.1, a free port."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("mlflow") or "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'store.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                mlflow.tracking.MlflowClient(uri).search_experiments()
                return server, uri
        except Exception:
            time.sleep(0.5)
    stop(server)
    raise RuntimeError("the mlflow server did not start")


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)  # its own session: the server and its workers
    server.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process, uri = start_server(tmp_path_factory.mktemp("mlflow"))
    yield uri
    stop(process)


def only_run(client, experiment: str):
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def test_a_federated_and_an_active_job_reach_a_real_mlflow_server(ray_session, server, tmp_path):
    client = mlflow.tracking.MlflowClient(server)
    uri = f"logger.mlflow.tracking_uri={server}"
    fed = sim.run(["logger=mlflow", uri, "name=fed", "protocol.rounds=4", "protocol.eval_every=2",
                   "progress=false", f"output_dir={tmp_path / 'fed'}"])  # fmt: skip
    run = only_run(client, "fed")
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm.client_lr"] == "0.05"
    assert run.data.params["protocol.rounds"] == "4"
    history = client.get_metric_history(run.info.run_id, "test_accuracy")
    expected = [(r["round"], r["test_accuracy"]) for r in fed.history if "test_accuracy" in r]
    assert [(m.step, m.value) for m in history] == pytest.approx(expected)
    assert run.data.metrics["final/test_accuracy"] == pytest.approx(fed.final["test_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "summary.json", "curves.png", "model.safetensors"} <= artifacts

    active = sim.run(["logger=mlflow", uri, "name=act", "algorithm=margin", "protocol.budget=30",
                      "learner.epochs=5", "progress=false",
                      f"output_dir={tmp_path / 'act'}"])  # fmt: skip
    run = only_run(client, "act")
    history = client.get_metric_history(run.info.run_id, "test_accuracy")
    expected = [(r["labels"], r["test_accuracy"]) for r in active.history]  # x: labels
    assert [(m.step, m.value) for m in history] == pytest.approx(expected)
    assert run.data.params["algorithm._target_"] == "algorithms.active.margin.Margin"


def test_a_sweep_s_jobs_nest_under_one_parent_run(server, tmp_path):
    client = mlflow.tracking.MlflowClient(server)
    proc = run_cli("-m", "logger=mlflow", f"logger.mlflow.tracking_uri={server}", "name=sweep",
                   "seed=0,1", "protocol.rounds=2", "progress=false",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    experiment = client.get_experiment_by_name("sweep").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("cohort.role") == "sweep"]
    jobs = [r for r in runs if r is not parent and r.info.run_id != parent.info.run_id]
    assert sorted(r.info.run_name for r in jobs) == ["0", "1"]
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"


@pytest.mark.slow  # an MLflow server started and killed, ~30-40 s (the suite's budget)
def test_a_server_that_dies_mid_run_costs_one_warning(tmp_path):
    process, uri = start_server(tmp_path / "doomed")
    out = tmp_path / "run"
    run = start_cli("logger=mlflow", f"logger.mlflow.tracking_uri={uri}", "name=doomed",
                    "protocol.rounds=40", "protocol.eval_every=5", "progress=false",
                    f"output_dir={out}")  # fmt: skip
    deadline = time.monotonic() + 120
    while not ((out / "metrics.jsonl").exists() and records(out)) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop(process)  # the server and its workers
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]
    assert len(records(out)) == 40 and (out / "summary.json").exists()
    warnings = [line for line in stderr.splitlines() if line.startswith("cohort: warning:")]
    assert len(warnings) == 1 and "logger.mlflow failed" in warnings[0], stderr[-2000:]


def test_a_missing_tracker_package_is_one_line_naming_the_extra(tmp_path):
    code = ("import sys; sys.modules['mlflow'] = None; import sim.__main__ as cli; "
            f"sys.argv = ['cohort', 'logger=mlflow', 'output_dir={tmp_path / 'run'}']; "
            "cli.main()")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "cohort: error: logger.mlflow: needs mlflow: pip install 'cohort[mlflow]'"
    )
    assert not (tmp_path / "run").exists()  # refused before anything was written
