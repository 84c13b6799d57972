"""The distribution ships its configs and its Hydra launcher: a wheel of the checkout, installed
(not editable) into a fresh environment, runs ``cohort`` and a sweep on ``hydra/launcher=cohort``
from another directory; and a user's own project outside the checkout plugs in its algorithm,
selector and protocol."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import copy_checkout


def sh(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
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


USER_ALGORITHM = '''
"""FedAvg with weight decay towards zero as a loss term (a user's own plug-in)."""
from dataclasses import dataclass
from typing import ClassVar

from algorithms.federated.fedavg import FedAvg


@dataclass
class MyFedAvg(FedAvg):
    engines: ClassVar[tuple[str, ...]] = ("sequential",)
    l2: float = 0.1

    def loss_term(self):
        return lambda params, server: 0.5 * self.l2 * sum((p**2).sum() for p in params)
'''
USER_SELECTOR = """
from dataclasses import dataclass

from sim.interfaces.active import LowestScoreSelector


@dataclass
class MyTop(LowestScoreSelector):
    def priority(self, outputs):
        return outputs.probabilities.max(axis=1)
"""


def test_plug_ins_from_the_user_s_own_project(tmp_path):
    """A user's project outside the checkout (its modules and ``conf/``) runs its own algorithm,
    selector and protocol by name against a non-editable copy of Cohort (``pip install
    --target``), with Hydra's search path: ``cohort hydra.searchpath=[file://$PWD/conf] ...``;
    their dataclasses' fields are their schema (overridable, checked), and the Ray workers
    import the project's modules."""
    from tests.test_recipes import recipe_files

    source = copy_checkout(tmp_path / "source")
    target = tmp_path / "cohort"
    sh(sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
       "--target", target, source)  # fmt: skip
    project = tmp_path / "project"
    guess = recipe_files()["sim/protocols/guess.py"]  # the protocol recipe, as a user's module
    files = {
        "my_algos/__init__.py": "",
        "my_algos/my_fedavg.py": USER_ALGORITHM,
        "my_algos/my_top.py": USER_SELECTOR,
        "my_algos/guess.py": guess,
        "conf/algorithm/my_fedavg.yaml": "defaults:\n  - /schema/algorithm@_here_: my_fedavg\n"
        "  - _self_\n_target_: my_algos.my_fedavg.MyFedAvg\n",
        "conf/algorithm/my_top.yaml": "defaults:\n  - /schema/algorithm@_here_: my_top\n"
        "  - override /protocol@_global_.protocol: active\n  - _self_\n"
        "_target_: my_algos.my_top.MyTop\n",
        "conf/protocol/guess.yaml": "defaults:\n  - /schema/protocol@_here_: guess\n"
        "  - _self_\n_target_: my_algos.guess.Guess\n",
    }
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    env = {**os.environ, "PYTHONPATH": str(target)}  # Cohort from the copy, not the checkout
    cohort = [target / "bin" / "cohort", f"hydra.searchpath=[file://{project / 'conf'}]"]
    where = sh(sys.executable, "-c", "import sim; print(sim.__file__)", cwd=project, env=env)
    assert Path(where.strip()).is_relative_to(target), where
    quiet = "progress=false"
    sh(*cohort, "algorithm=my_fedavg", "algorithm.l2=0.5", "protocol.rounds=2", quiet,
       "output_dir=a", cwd=project, env=env)  # fmt: skip
    sh(*cohort, "algorithm=my_top", "protocol.budget=30", "learner.epochs=5", quiet,
       "output_dir=s", cwd=project, env=env)  # fmt: skip
    sh(*cohort, "protocol=guess", "protocol.rounds=2", quiet, "output_dir=p", cwd=project,
       env=env)  # fmt: skip
    config = json.loads((project / "a" / "summary.json").read_text())["config"]
    assert config["algorithm"] == {**config["algorithm"], "_target_": "my_algos.my_fedavg.MyFedAvg",
                                   "l2": 0.5, "client_lr": 0.05}  # fmt: skip
    assert json.loads((project / "s" / "summary.json").read_text())["final"]["test_accuracy"] > 0.5
    assert json.loads((project / "p" / "summary.json").read_text())["rounds"] == 2
    bad = subprocess.run(
        [*map(str, cohort), "algorithm=my_fedavg", "algorithm.l3=1", quiet, "output_dir=b"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode != 0 and "l3" in bad.stderr
