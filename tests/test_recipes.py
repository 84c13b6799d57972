"""The recipes of the manual (``docs/recipes/*.md``), followed in a copy of the checkout: every
file a page shows (a fenced block with ``title="path"``) written there, then run by name: an
algorithm, a selector, a protocol and a model. Nothing in sim/'s runtime changes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from textwrap import dedent

from tests.conftest import REPO, copy_checkout

FILE_BLOCK = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.S | re.M)


def recipe_files() -> dict[str, str]:
    """Every file the recipe pages show, by its path in the checkout."""
    files = {}
    for page in sorted((REPO / "docs" / "recipes").glob("*.md")):
        for path, text in FILE_BLOCK.findall(page.read_text()):
            assert path not in files, f"{page.name}: {path} shown twice"
            files[path] = text
    return files


def test_the_recipes_run(tmp_path):
    repo = copy_checkout(tmp_path / "repo")
    files = recipe_files()
    assert set(files) == {
        "algorithms/federated/fedavg_l2.py", "conf/algorithm/fedavg_l2.yaml",
        "algorithms/active/lowest_top.py", "conf/algorithm/lowest_top.yaml",
        "sim/protocols/guess.py", "conf/protocol/guess.yaml",
        "models/tanh_mlp.py", "conf/model/tanh_mlp.yaml",
    }  # fmt: skip
    for name, text in files.items():
        (repo / name).write_text(text)
    script = dedent(f"""
        import json, sim
        from sim.runtime.session import start_local_ray
        start_local_ray(2, None, False)
        out = {str(tmp_path)!r}
        quiet = ["progress=false"]
        a = sim.run(["algorithm=fedavg_l2", "algorithm.l2=0.5", "protocol.rounds=2",
                     "protocol.client_engine=vectorized", *quiet, f"output_dir={{out}}/a"])
        s = sim.run(["algorithm=lowest_top", "protocol.budget=30", "learner.epochs=5", *quiet,
                     f"output_dir={{out}}/s"])
        p = sim.run(["protocol=guess", "protocol.rounds=2", *quiet, f"output_dir={{out}}/p"])
        q = sim.run(["protocol=guess", "protocol.rounds=3", "resume=true", *quiet,
                     f"output_dir={{out}}/p"])
        m = sim.run(["model=tanh_mlp", "model.hidden=16", "protocol.rounds=2", *quiet,
                     f"output_dir={{out}}/m"])
        print(json.dumps([r.history[-1] for r in (a, s, p, q, m)] + [len(m.params)]))
    """)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=repo, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    *records, size = json.loads(proc.stdout.splitlines()[-1])
    algorithm, selector, guessed, resumed, model = records
    assert algorithm["round"] == 2 and "test_accuracy" in algorithm
    assert selector["labels"] == 30 and selector["test_accuracy"] > 0.5
    assert guessed["round"] == 2 and resumed["round"] == 3
    assert model["round"] == 2 and size == 60 * 16 + 16 + 16 * 10 + 10  # Synthetic(1,1): 60 x 10
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["algorithm"]["l2"] == 0.5 and config["algorithm"]["client_lr"] == 0.05
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["config"]["protocol"]["_target_"] == "sim.protocols.guess.Guess"
    assert (tmp_path / "p" / "checkpoints" / "checkpoint.npz").exists()
