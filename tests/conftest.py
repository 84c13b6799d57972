"""Shared fixtures: one local Ray for the whole test session (Ray takes ~5 s to start)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def ensure_ray():
    """The session's local Ray (2 CPUs, 1 logical GPU, loopback only), started on first use and
    again if a test shut it down (the multi-node tests do, before they start a cluster)."""
    import ray

    from sim.runtime import start_local_ray

    if not ray.is_initialized():
        start_local_ray(num_cpus=2, num_gpus=1, dashboard=False)
    return ray


@pytest.fixture
def ray_session():
    return ensure_ray()


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
