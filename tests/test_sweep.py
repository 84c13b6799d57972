"""Hydra multiruns: the basic launcher (one job after another) and its report; and
``hydra/launcher=cohort``: a multirun's jobs side by side on Ray, each in its own placement
group. The same numbers as a sequential sweep for every protocol; a failing job recorded and the
others going on; a killed job retried from its checkpoint to the same numbers; Ctrl-C and
``resume=true``."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

import sim
from sim.runtime.config import sweep_in_jobs
from tests.conftest import run_cli, start_cli

FAST = ["protocol.rounds=4", "protocol.eval_every=2", "progress=false"]
TIMES = ("_s", "_time", "seconds")  # wall-clock fields of a record: never compared


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def records(folder: Path) -> list[dict]:
    """A run's records without their wall-clock fields."""
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith(TIMES)} for line in lines]


def sweep_record(sweep: Path) -> dict[int, dict]:
    return {job["job"]: job for job in json.loads((sweep / "sweep.json").read_text())["jobs"]}


def wait_for(predicate, proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def rounds_in(folder: Path) -> int:
    metrics = folder / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def test_two_job_multirun_and_its_report(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "seed=0,1",
        "protocol.rounds=3",
        "protocol.eval_every=1",
        "progress=false",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = sorted(sweep.glob("*/summary.json"))
    assert len(summaries) == 2
    seeds = sorted(json.loads(p.read_text())["config"]["seed"] for p in summaries)
    assert seeds == [0, 1]

    report = run_cli("report", str(sweep))
    assert report.returncode == 0, report.stderr
    assert "test_accuracy" in report.stdout and "(2)" in report.stdout
    assert (sweep / "report_test_accuracy.png").stat().st_size > 0
    assert (sweep / "report.csv").exists()


def test_a_sweep_of_algorithms_takes_a_field_of_their_own_protocol(tmp_path):
    # protocol.budget exists for the active protocol only, which margin and random pick: it is
    # applied in each job's composition, not to the sweep's primary config (federated).
    assert sweep_in_jobs(["-m", "algorithm=margin,random", "protocol.budget=60", "seed=1"]) == [
        "-m",
        "algorithm=margin,random",
        "protocol.budget=choice(60)",
        "seed=1",
    ]
    assert sweep_in_jobs(["-m", "seed=0,1", "protocol.rounds=2"])[2] == "protocol.rounds=2"
    assert sweep_in_jobs(["algorithm=margin", "protocol.budget=60"])[1] == "protocol.budget=60"
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "algorithm=margin,random",
        "env.dataset=iris",
        "protocol.budget=30",
        "progress=false",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    configs = [json.loads(p.read_text())["config"] for p in sorted(sweep.glob("*/summary.json"))]
    assert [c["protocol"]["budget"] for c in configs] == [30, 30]
    assert {c["algorithm"]["_target_"].rsplit(".", 1)[1] for c in configs} == {
        "Margin",
        "RandomSelection",
    }


@pytest.mark.parametrize("launcher", ["basic", "cohort"])
def test_a_failing_job_is_recorded_and_the_others_go_on(tmp_path, launcher):
    """Jobs 1 and 3 are refused before the sweep starts (seed -1), job 2 fails while it runs
    (a cohort larger than the population, found once the data is loaded), jobs 4-7 cannot be
    composed (margin's protocol has no clients_per_round); job 0 finishes, the report covers it,
    and the sweep ends with status 1 and a table of what failed. Either launcher."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m", f"hydra/launcher={launcher}", *FAST, f"hydra.sweep.dir={sweep}",
        "algorithm=fedavg,margin", "protocol.clients_per_round=10,1000", "seed=0,-1",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    jobs = sweep_record(sweep)
    assert [jobs[k]["status"] for k in range(8)] == ["done"] + ["failed"] * 7
    assert jobs[1]["error"] == "seed: must be >= 0 (got -1)"
    assert jobs[2]["error"].startswith("protocol.clients_per_round: must be <= the population")
    assert jobs[4]["error"] == "Could not override 'protocol.rounds': Key 'rounds' is not in struct"
    assert all("\n" not in job["error"] for job in list(jobs.values())[1:])
    console = (sweep / "2" / "log.txt").read_text() if launcher == "cohort" else proc.stderr
    assert console.count("cohort: error: protocol.clients_per_round") == 1  # no traceback
    assert "Traceback" not in console
    assert "7 of 8 jobs did not finish" in (sweep / "failed.md").read_text()
    assert "clients_per_round=1000 seed=0 | protocol.clients_per_round: must be" in proc.stderr
    assert (sweep / "0" / "summary.json").exists() and (sweep / "report.md").exists()
    folders = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert folders == (["0", "2"] if launcher == "cohort" else ["0"])  # 2: its log.txt
    if launcher == "basic":  # resume=true skips the finished job (the cohort launcher: below)
        finished = (sweep / "0" / "metrics.jsonl").read_bytes()
        again = run_cli(
            "-m", f"hydra/launcher={launcher}", *FAST, f"hydra.sweep.dir={sweep}", "resume=true",
            "algorithm=fedavg,margin", "protocol.clients_per_round=10,1000", "seed=0,-1",
        )  # fmt: skip
        jobs = sweep_record(sweep)
        assert again.returncode == 1 and jobs[0]["status"] == "finished_before"
        # job 2 never got going: it starts from the beginning (not "no checkpoint to resume")
        assert jobs[2]["error"].startswith("protocol.clients_per_round: must be <= the population")
        assert (sweep / "0" / "metrics.jsonl").read_bytes() == finished
        assert "7 of 8 jobs did not finish" in again.stderr


def test_a_killed_job_is_retried_from_its_checkpoint_to_the_same_numbers(ray_session, tmp_path):
    run = ["protocol.rounds=40", "protocol.eval_every=5", "protocol.checkpoint_every=5"]
    alone = sim.run([*run, "progress=false", f"output_dir={tmp_path / 'alone'}"])
    sweep = tmp_path / "sweep"
    proc = start_cli("-m", "hydra/launcher=cohort", *run, "seed=0", f"hydra.sweep.dir={sweep}")
    job = sweep / "0"
    assert wait_for(lambda: rounds_in(job) >= 12, proc, 240), proc.stderr.read()[-3000:]
    header = (job / "log.txt").read_text().splitlines()[0]  # [job 0] pid P on node N (...)
    os.kill(int(header.split()[3]), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "infrastructure fault" in stderr
    record = sweep_record(sweep)[0]
    assert record["status"] == "done" and record["attempts"] == 2
    assert summary(job)["params_sha256"] == summary(alone.output_dir)["params_sha256"]
    assert records(job) == records(alone.output_dir)


def test_ctrl_c_keeps_finished_jobs_and_resume_runs_the_rest(ray_session, tmp_path):
    """One job at a time: Ctrl-C while job 1 runs; ``resume=true`` skips job 0 (its summary
    untouched), continues job 1 from its checkpoint and runs job 2; the numbers are those of
    an uninterrupted run."""
    run = ["protocol.rounds=80", "protocol.eval_every=5", "protocol.checkpoint_every=5"]
    sweep = tmp_path / "sweep"
    command = [
        "-m", "hydra/launcher=cohort", "hydra.launcher.max_concurrent=1", *run, "seed=0,1,2",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    # Ctrl-C as a terminal sends it: to a process whose SIGINT is not ignored (a test before may
    # have left this process ignoring it, and an ignored signal stays ignored across exec).
    proc = start_cli(*command, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert wait_for(lambda: rounds_in(sweep / "1") >= 12, proc, 240), proc.stderr.read()[-3000:]
    assert proc.poll() is None, f"the sweep ended before Ctrl-C: {proc.stderr.read()[-3000:]}"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0, stderr[-3000:]
    assert (sweep / "0" / "summary.json").exists()
    assert not (sweep / "1" / "summary.json").exists() and not (sweep / "2").exists()
    assert sweep_record(sweep)[1]["status"] == "interrupted"
    finished_at = (sweep / "0" / "summary.json").stat().st_mtime_ns

    again = run_cli(*command, "resume=true", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    jobs = sweep_record(sweep)
    assert [jobs[k]["status"] for k in range(3)] == ["finished_before", "done", "done"]
    assert (sweep / "0" / "summary.json").stat().st_mtime_ns == finished_at
    assert "3 runs" in (sweep / "report.md").read_text() or (sweep / "report.csv").exists()
    alone = sim.run([*run, "seed=1", "progress=false", f"output_dir={tmp_path / 'alone'}"])
    assert summary(sweep / "1")["params_sha256"] == summary(alone.output_dir)["params_sha256"]
    assert records(sweep / "1") == records(alone.output_dir)


LM = ["env.vocab_size=512", "model.layers=1", "model.width=32", "model.heads=2",
      "model.context=32", "protocol.steps=2", "protocol.eval_every=2"]  # fmt: skip
SYNTHESIS = ["protocol.samples=20", "protocol.min_mauve_samples=20", "protocol.length=12",
             "protocol.train_examples=64", "protocol.downstream.steps=2",
             "protocol.downstream.eval_examples=16",
             "protocol.downstream.vocab_size=300"]  # fmt: skip
EVERY_PROTOCOL = {  # one small job of each protocol, with the actors and tasks it places
    "federated": ["protocol.rounds=2", "protocol.eval_every=1"],
    "centralized": ["protocol=centralized", "protocol.rounds=1"],
    "active": ["algorithm=margin", "protocol.seed_size=10", "protocol.budget=20",
               "learner.epochs=5"],
    "covering": ["algorithm=explore_commit"],
    "retraining": ["algorithm=distill", "learner.epochs=5"],
    "teacher_student": ["algorithm=salt", "algorithm.kd_steps=2", *LM,
                        "protocol.teacher.layers=1", "protocol.teacher.width=16",
                        "protocol.teacher.heads=2", "protocol.teacher.steps=2",
                        "protocol.teacher.batch_size=4"],
    "pretraining": ["algorithm=span_corruption", *LM, "model.decoder_layers=1",
                    "protocol.downstream.at=[1.0]", "protocol.downstream.steps=2",
                    "protocol.downstream.tasks=[documents,infill]"],
    "synthesis": ["algorithm=softsrv", *SYNTHESIS, "protocol.steps=2", "protocol.log_every=1",
                  "protocol.batch_size=4", "protocol.micro_batch=2",
                  "protocol.generation_batch=20"],
}  # fmt: skip


LANGUAGE_MODELS = ("teacher_student", "pretraining", "synthesis")


@pytest.mark.parametrize(
    "kinds",
    [
        pytest.param([k for k in EVERY_PROTOCOL if k not in LANGUAGE_MODELS], id="classical"),
        # ~100 s (Ray Train's workers, SmolLM2 and MiniLM, each twice): in pytest -m slow
        pytest.param(list(LANGUAGE_MODELS), id="language_models", marks=pytest.mark.slow),
    ],
)
def test_every_protocol_gives_the_same_numbers_side_by_side_as_alone(ray_session, tmp_path, kinds):
    """One small job of each protocol run alone (one after another, as the basic launcher
    does) and side by side by the launcher, in this test session's Ray: the same records and
    parameters."""
    from sim.runtime.sweep import run_jobs

    jobs = [[*EVERY_PROTOCOL[kind], "progress=false"] for kind in kinds]
    alone = [sim.run([*job, f"output_dir={tmp_path / 'alone' / str(k)}"]).output_dir
             for k, job in enumerate(jobs)]  # fmt: skip
    sweep = tmp_path / "sweep"
    returned = run_jobs(jobs, sweep, progress=False)
    record = sweep_record(sweep)
    assert [record[k]["status"] for k in range(len(jobs))] == ["done"] * len(jobs), record
    assert len(returned) == len(jobs)
    for k, kind in enumerate(kinds):
        assert summary(sweep / str(k))["params_sha256"] == summary(alone[k])["params_sha256"], kind
        assert records(sweep / str(k)) == records(alone[k]), kind


def test_an_optuna_search_has_two_trials_in_flight_at_once(tmp_path):
    """``hydra/sweeper=optuna`` (the ``optuna`` extra) hands the launcher batches of
    ``n_jobs`` trials; each batch's two jobs run at the same time; the objective is the
    runs' final test accuracy."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "search"
    proc = run_cli(
        "-m", "hydra/sweeper=optuna", "hydra/launcher=cohort", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4", "hydra.sweeper.direction=maximize",
        "algorithm.client_lr=interval(0.01,0.3)", "objective=test_accuracy",
        "protocol.rounds=5", "progress=false", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sweep_record(sweep)
    assert [jobs[k]["status"] for k in range(4)] == ["done"] * 4
    for a, b in ((0, 1), (2, 3)):  # a batch: both in flight at once
        (start_a, end_a), (start_b, end_b) = jobs[a]["span"], jobs[b]["span"]
        assert start_a < end_b and start_b < end_a
    best = (sweep / "optimization_results.yaml").read_text()
    accuracies = [summary(sweep / str(k))["final"]["test_accuracy"] for k in range(4)]
    assert f"best_value: {max(accuracies)}" in best


def test_a_missing_objective_is_named(tmp_path):
    proc = run_cli("protocol.rounds=1", "objective=accuracy", f"output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert "objective: the run has no final metric 'accuracy' (it has: " in proc.stderr


def test_grids_from_the_command_line_take_yaml_values_unquoted(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "hydra.sweeper.grids=[{seed: 0, protocol.eval_every: 1}, {seed: 1}]",
                   "protocol.rounds=1", "progress=false", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    configs = [summary(sweep / str(job))["config"] for job in (0, 1)]
    assert [(c["seed"], c["protocol"]["eval_every"]) for c in configs] == [(0, 1), (1, 5)]


def test_a_sweep_of_several_grids_runs_each_job_once():
    """``hydra.sweeper.grids``: each grid adds to ``params`` (its own value of a shared key wins),
    the command line wins over both, a job in two grids runs once, batches as Hydra's."""
    from types import SimpleNamespace

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.cohort_launcher.cohort_sweeper import CohortSweeper

    grids = [{"b": "1,2"}, {"a": "y", "b": 1}, {"b": "1"}, {"c": 3, "b": 2}, {"b": 2, "c": 3}]
    sweeper = CohortSweeper(max_batch_size=2, params={"seed": "0,1", "a": "x"}, grids=grids)
    sweeper.hydra_context = SimpleNamespace(config_loader=None)
    sweeper.arguments = ["seed=5"]
    parsed = OverridesParser.create().parse_overrides(["seed=0,1", "a=x", "seed=5"])
    assert sweeper.split_arguments(parsed, 2) == [
        [["seed=5", "a=x", "b=1"], ["seed=5", "a=x", "b=2"]],
        [["seed=5", "a=y", "b=1"], ["seed=5", "a=x", "c=3", "b=2"]],  # the last grid's: a twin
    ]
    typed = CohortSweeper(max_batch_size=None, grids=[{"a": 1.25, "b": None, "c": True}])
    assert typed.grids == [{"a": "1.25", "b": "null", "c": "true"}]  # as Hydra writes them
    without = CohortSweeper(max_batch_size=None, params={"seed": "0,1"})
    assert without.split_arguments(
        OverridesParser.create().parse_overrides(["seed=0,1"]), None
    ) == [[["seed=0"], ["seed=1"]]]
    with pytest.raises(ValueError, match="grids: give at least one grid"):
        CohortSweeper(max_batch_size=None, grids=[])
