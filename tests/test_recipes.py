"""The README's recipes, followed in a copy of the checkout: add an algorithm, a selector and a
protocol (each a module and a YAML), then run them by name. Nothing in sim/'s runtime changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from textwrap import dedent

from tests.conftest import copy_checkout

ALGORITHM = '''
"""FedAvg with weight decay towards zero written as a loss term: l2/2 ||w||^2."""
from dataclasses import dataclass
from typing import ClassVar

from algorithms.fedavg import FedAvg


@dataclass
class FedAvgL2(FedAvg):
    engines: ClassVar[tuple[str, ...]] = ("sequential", "vectorized")
    l2: float = 0.1

    def loss_term(self):
        return lambda params, server: 0.5 * self.l2 * sum((p**2).sum() for p in params)
'''
SELECTOR = '''
"""The points whose most likely class is least likely (least confidence, written anew)."""
from dataclasses import dataclass

from sim.interfaces.active import LowestScoreSelector


@dataclass
class LowestTop(LowestScoreSelector):
    def priority(self, outputs):
        return outputs.probabilities.max(axis=1)
'''
PROTOCOL = '''
"""A toy protocol: each round a Ray task guesses the test labels at random."""
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import ray

from sim import seeding
from sim.interfaces.federated import Environment
from sim.interfaces.protocol import Outcome


@ray.remote
def guess(test_y, seed, round_index):
    labels = seeding.rng(seed, "guess", round_index).integers(0, test_y.max() + 1, len(test_y))
    return float((labels == test_y).mean())


@dataclass
class Guess:
    resumable: ClassVar[tuple[str, ...]] = ("rounds",)
    rounds: int = 3

    def prepare(self, setup):
        env = setup.component("env", Environment, "a federated env", "guess")
        data = env.load(seeding.rng(setup.seed, "env"))
        start = setup.start[1] if setup.start else {"round": 0, "history": []}
        return GuessJob(self.rounds, data.test_y, setup.seed, start["round"], start["history"])


@dataclass
class GuessJob:
    rounds: int
    test_y: np.ndarray
    seed: int
    done: int
    history: list

    def run(self, context):
        context.begin(self.history)
        for r in range(self.done + 1, self.rounds + 1):
            tick = time.perf_counter()
            accuracy = ray.get(guess.remote(self.test_y, self.seed, r))
            seconds = time.perf_counter() - tick
            record = {"round": r, "test_accuracy": accuracy, "round_time_s": seconds}
            self.history.append(record)
            context.record(record, f"[round {r}] test_acc {accuracy:.3f}")
            context.save({"accuracy": np.array([accuracy])}, r, self.history)
        params = np.array([r["test_accuracy"] for r in self.history])
        return Outcome(params, self.history, ("test_accuracy",))
'''


def yaml(group: str, name: str, target: str, *extra: str) -> str:
    defaults = "".join(f"  - {entry}\n" for entry in (f"/schema/{group}@_here_: {name}", *extra))
    return f"defaults:\n{defaults}  - _self_\n_target_: {target}\n"


def test_add_an_algorithm_a_selector_and_a_protocol(tmp_path):
    repo = copy_checkout(tmp_path / "repo")
    files = {
        "algorithms/fedavg_l2.py": ALGORITHM,
        "conf/algorithm/fedavg_l2.yaml": yaml(
            "algorithm", "fedavg_l2", "algorithms.fedavg_l2.FedAvgL2"
        ),
        "algorithms/lowest_top.py": SELECTOR,
        "conf/algorithm/lowest_top.yaml": yaml(
            "algorithm", "lowest_top", "algorithms.lowest_top.LowestTop",
            "override /protocol@_global_.protocol: active",
        ),
        "sim/protocols/guess.py": PROTOCOL,
        "conf/protocol/guess.yaml": yaml("protocol", "guess", "sim.protocols.guess.Guess"),
    }  # fmt: skip
    for name, text in files.items():
        (repo / name).write_text(dedent(text))
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
        print(json.dumps([r.history[-1] for r in (a, s, p, q)]))
    """)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=repo, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    algorithm, selector, guessed, resumed = json.loads(proc.stdout.splitlines()[-1])
    assert algorithm["round"] == 2 and "test_accuracy" in algorithm
    assert selector["labels"] == 30 and selector["test_accuracy"] > 0.5
    assert guessed["round"] == 2 and resumed["round"] == 3
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["algorithm"]["l2"] == 0.5 and config["algorithm"]["client_lr"] == 0.05
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["config"]["protocol"]["_target_"] == "sim.protocols.guess.Guess"
    assert (tmp_path / "p" / "checkpoints" / "checkpoint.npz").exists()
