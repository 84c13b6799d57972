"""Slow end-to-end reproductions of the presets: `pytest -m slow` (not in the default suite)."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
GROUPS = ("protocol", "algorithm")


def final_by_algorithm(sweep, key, protocol="Federated"):
    """Final ``key`` per algorithm class, over the runs of the ``protocol`` class."""
    finals: dict[str, list[float]] = {}
    for path in sweep.glob("*/summary.json"):
        summary = json.loads(path.read_text())
        config = summary["config"]
        run_protocol, algorithm = (config[g]["_target_"].rsplit(".", 1)[-1] for g in GROUPS)
        if run_protocol == protocol:
            finals.setdefault(algorithm, []).append(summary["final"][key])
    return finals


def run_preset(name: str, tmp_path: Path) -> Path:
    """Run an experiment preset (a multirun over algorithms and 3 seeds); its sweep folder."""
    sweep = tmp_path / name
    proc = run_cli(f"experiment={name}", f"hydra.sweep.dir={sweep}", timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def test_fedpa_quadratic_preset(tmp_path):
    sweep = run_preset("fedpa_quadratic", tmp_path)
    distances = final_by_algorithm(sweep, "distance_to_optimum")
    assert len(distances["FedAvg"]) == len(distances["FedPA"]) == 3
    assert np.mean(distances["FedPA"]) < 0.75 * np.mean(distances["FedAvg"])
    # The upper reference: on the pooled data, each algorithm gets closer than FedPA does.
    pooled = final_by_algorithm(sweep, "distance_to_optimum", protocol="Centralized")
    assert len(pooled["FedAvg"]) == len(pooled["FedPA"]) == 3
    assert max(np.mean(pooled["FedAvg"]), np.mean(pooled["FedPA"])) < np.mean(distances["FedPA"])
    assert (sweep / "report_distance_to_optimum.png").exists()


def test_fedpa_fashion_mnist_preset(tmp_path):
    sweep = run_preset("fedpa_fashion_mnist", tmp_path)
    accuracy = final_by_algorithm(sweep, "test_accuracy")
    assert len(accuracy["FedAvg"]) == len(accuracy["FedPA"]) == 3
    assert np.mean(accuracy["FedPA"]) >= np.mean(accuracy["FedAvg"]) - 0.02  # at least matches
    assert (sweep / "report_test_accuracy.png").exists()
