"""Shared fixtures: one local Ray for the whole test session (Ray takes ~5 s to start)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def ensure_ray():
    """The session's local Ray (2 CPUs, 1 logical GPU, loopback only), started on first use and
    again if a test shut it down (the multi-node tests do, before they start a cluster)."""
    import ray

    from sim.runtime.session import start_local_ray

    if not ray.is_initialized():
        start_local_ray(num_cpus=2, num_gpus=1, dashboard=False)
    return ray


@pytest.fixture
def ray_session():
    return ensure_ray()


def copy_checkout(dest: Path) -> Path:
    """The files git would commit (tracked, or new and not ignored) copied to ``dest``, links
    kept as links: a checkout that a test may change or build."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    for name in listed.stdout.splitlines():
        if (REPO / name).exists() or (REPO / name).is_symlink():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target, follow_symlinks=False)
    return dest


def start_cli(*args: str, **popen) -> subprocess.Popen:
    """``python -m sim ARGS`` started in the background (stderr piped, as text), for tests that
    act on a run while it goes."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "sim", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_for_rounds(proc: subprocess.Popen, metrics: Path, rounds: int, timeout: float) -> int:
    """Wait until ``metrics`` (a run's metrics.jsonl) holds ``rounds`` records, the run ends, or
    ``timeout`` seconds pass; returns the number of records."""
    deadline = time.monotonic() + timeout
    while True:
        logged = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        if logged >= rounds or proc.poll() is not None or time.monotonic() > deadline:
            return logged
        time.sleep(0.01)


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """``python -m sim ARGS`` in a fresh process (its own Hydra and, if it gets that far, Ray)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "sim", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


RAY_LOG = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+\s+(INFO|WARNING) ")  # Ray's own start-up lines


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``cohort: error:`` line of a refused command (Ray's own log lines aside)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.strip() and not RAY_LOG.match(x)]
    assert len(lines) == 1 and lines[0].startswith("cohort: error: "), proc.stderr[-2000:]
    return lines[0]
