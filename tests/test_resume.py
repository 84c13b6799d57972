"""Checkpoint and resume: a run killed with SIGKILL and resumed ends exactly where an
uninterrupted run ends."""

import json
import os
import signal
import time

import numpy as np
import pytest

import sim
from sim.runtime import checkpoint
from tests.conftest import run_cli, start_cli, wait_for_rounds

ROUNDS = 60
COMMON = [
    f"protocol.rounds={ROUNDS}",
    "env.max_samples_per_client=150",
    "protocol.checkpoint_every=5",
    "protocol.eval_every=10",
    "progress=false",
    "algorithm.server_momentum=0.5",
]


def test_checkpoint_round_trip_refuses_pickles(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"params": np.arange(3.0)}, {"round": 2})
    arrays, meta = checkpoint.load(path)
    np.testing.assert_array_equal(arrays["params"], np.arange(3.0))
    assert meta == {"round": 2}
    np.savez(path, evil=np.array([object()], dtype=object))
    with pytest.raises(ValueError):
        checkpoint.load(path)


@pytest.mark.slow  # about 60 s; the suite keeps the resume of runs stopped early (test_failures.py)
def test_resume_after_sigkill_matches_an_uninterrupted_run(ray_session, tmp_path):
    run_dir = tmp_path / "killed"
    ckpt = run_dir / "checkpoints" / "checkpoint.npz"
    proc = start_cli(*COMMON, f"hydra.run.dir={run_dir}", start_new_session=True)
    # Kill past the first checkpoint (round 5) but before the second, so rounds 6-7 are logged
    # beyond the checkpoint and must be rewritten on resume.
    wait_for_rounds(proc, run_dir / "metrics.jsonl", 7, timeout=180)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    done = [json.loads(x)["round"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert 7 <= len(done) < ROUNDS, "the run must have been killed mid-way"
    assert checkpoint.load(ckpt)[1]["round"] < len(done), "rounds beyond the checkpoint"
    assert not (run_dir / "summary.json").exists()

    resumed = run_cli(*COMMON, "resume=true", f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = sim.run([*COMMON, f"output_dir={tmp_path / 'full'}"])

    arrays, meta = checkpoint.load(ckpt)
    np.testing.assert_array_equal(arrays["params"], full.params)
    strip = lambda h: [{k: v for k, v in r.items() if k != "round_time_s"} for r in h]  # noqa: E731
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert strip([json.loads(x) for x in lines]) == strip(full.history)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["test_accuracy"] == full.final["test_accuracy"]


def test_ctrl_c_ends_a_run_with_one_line_and_it_resumes(tmp_path):
    """Ctrl-C: exit status 130, one line that says how to go on and no traceback; the run then
    resumes from its checkpoint."""
    out = tmp_path / "run"
    args = ["protocol.rounds=200", "protocol.eval_every=50", "protocol.checkpoint_every=5",
            f"output_dir={out}"]  # fmt: skip
    proc = start_cli(*args, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "checkpoints" / "checkpoint.npz").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("cohort: interrupted; to go on from the")
    again = run_cli(*args, "resume=true", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "summary.json").exists()
