"""The distribution ships its configs and its Hydra launcher: a wheel of the checkout, installed
(not editable) into a fresh environment, runs ``cohort`` and a sweep on ``hydra/launcher=cohort``
from another directory."""

from __future__ import annotations

import json
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import copy_checkout


def sh(*args: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow  # about 35 s; .ci/run installs the checkout itself
def test_wheel_installs_and_runs_from_any_directory(tmp_path):
    source = copy_checkout(tmp_path / "source")  # a build leaves the checkout alone
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
       "-w", tmp_path / "dist", source)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("cohort-*.whl")

    env = tmp_path / "env"  # a fresh venv; the dependencies come from this one, read-only
    sh(sys.executable, "-m", "venv", "--without-pip", env)
    new_site = Path(sysconfig.get_path("purelib", vars={"base": env, "platbase": env}))
    deps = [site.getsitepackages()[0], sysconfig.get_path("purelib")]
    (new_site / "deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    sh(sys.executable, "-m", "pip", "--python", env / "bin" / "python", "install",
       "--no-deps", "--no-index", "-q", wheel)  # fmt: skip

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = sh(env / "bin" / "python", "-c", "import sim; print(sim.__file__)", cwd=elsewhere)
    assert Path(where.strip()).is_relative_to(env), where
    sh(env / "bin" / "cohort", "protocol.rounds=2", "progress=false", "output_dir=run",
       cwd=elsewhere)  # fmt: skip
    summary = json.loads((elsewhere / "run" / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["config"]["algorithm"]["client_lr"] == 0.05

    # The sweep launcher is found by Hydra in the installed distribution (hydra_plugins).
    module = "import hydra_plugins.cohort_launcher.cohort_launcher as m; print(m.__file__)"
    where = sh(env / "bin" / "python", "-c", module, cwd=elsewhere)
    assert Path(where.strip()).is_relative_to(env), where
    sh(env / "bin" / "cohort", "-m", "hydra/launcher=cohort", "seed=0,1", "protocol.rounds=2",
       "progress=false", "hydra.sweep.dir=sweep", cwd=elsewhere)  # fmt: skip
    jobs = json.loads((elsewhere / "sweep" / "sweep.json").read_text())["jobs"]
    assert [job["status"] for job in jobs] == ["done", "done"]
