"""A Hydra multirun on the local Ray, then `cohort report` over its folder."""

import json

from tests.conftest import run_cli


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
