"""End-to-end federated runs on the shared local Ray: outputs, determinism, dropped clients."""

import json

import numpy as np
import pytest

import sim
from sim import compose

TIMING = {"round_time_s"}


def strip_timing(history):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def test_default_run_learns_and_writes_its_outputs(ray_session, tmp_path):
    result = sim.run(
        [
            "protocol.rounds=20",
            "protocol.eval_every=10",
            "progress=false",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    out = result.output_dir
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == list(range(1, 21))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["test_accuracy"] == result.final["test_accuracy"]
    assert json.loads((out / "config.json").read_text())["env"]["alpha"] == 1.0
    assert (out / "curves.png").stat().st_size > 0
    assert (out / "checkpoints" / "checkpoint.npz").exists()
    first, last = result.history[9], result.history[19]
    assert last["test_loss"] < first["test_loss"]
    assert last["test_accuracy"] > 0.3  # 10 classes: chance is about 0.1
    assert 0 <= last["client_accuracy_mean"] <= 1
    assert all(r["clients"] == 10 and r["dropped_clients"] == 0 for r in result.history)


@pytest.mark.parametrize(
    "extra",
    [
        [],
        pytest.param(  # about 25 s: in `pytest -m slow` (the suite's 15-minute budget)
            ["algorithm.server_momentum=0.9", "algorithm.local_epochs=2"], marks=pytest.mark.slow
        ),
    ],
)
def test_same_numbers_with_one_and_two_workers(ray_session, tmp_path, extra):
    common = [
        "protocol.rounds=3",
        "protocol.eval_every=1",
        "progress=false",
        "protocol.clients_per_round=12",
        *extra,
    ]
    one = sim.run([*common, "cluster.num_workers=1", f"output_dir={tmp_path / 'one'}"])
    two = sim.run([*common, "cluster.num_workers=2", f"output_dir={tmp_path / 'two'}"])
    np.testing.assert_array_equal(one.params, two.params)
    assert strip_timing(one.history) == strip_timing(two.history)


def test_non_finite_updates_are_dropped_and_the_run_goes_on(ray_session, tmp_path):
    # A client learning rate beyond float32's range makes every local update non-finite.
    result = sim.run(
        [
            "protocol.rounds=2",
            "protocol.eval_every=1",
            "progress=false",
            "algorithm.client_lr=1e38",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    assert [r["dropped_clients"] for r in result.history] == [10, 10]
    baseline = sim.run(
        [
            "protocol.rounds=1",
            "protocol.eval_every=1",
            "progress=false",
            "algorithm.client_lr=0",
            f"output_dir={tmp_path / 'zero'}",
        ]
    )
    np.testing.assert_array_equal(result.params, baseline.params)  # nothing was applied


def test_python_api_takes_a_composed_config(ray_session, tmp_path):
    cfg = compose(["protocol.rounds=2", "progress=false", f"output_dir={tmp_path / 'run'}"])
    result = sim.run(cfg)
    assert result.config["protocol"]["rounds"] == 2 and len(result.history) == 2


def test_drivers_and_the_federated_server_import_no_torch():
    """The driver composes, checks and prepares a federated, active or retraining run, and the
    federated server unpickles the algorithms, without torch (2 s and 150 MB a process): only
    the workers train."""
    import subprocess
    import sys

    code = (
        "import pickle, sys\n"
        "import sim.__main__\n"
        "from sim.interfaces.protocol import Setup\n"
        "from sim.runtime.config import COMPONENTS, build_component\n"
        "from sim.runtime.run import compose\n"
        "for overrides in ([], ['algorithm=fedprox'], ['algorithm=fedpa', 'model=linear',"
        " 'env=least_squares'], ['env=fashion_mnist', 'model=cnn', 'env.train_subset=1000',"
        " 'env.num_clients=10'], ['algorithm=margin', 'env=tabular'],"
        " ['algorithm=retrain', 'env=spam'], ['experiment=covering']):\n"
        "    cfg = compose(overrides)\n"
        "    parts = {g: build_component(g, cfg[g]) for g in COMPONENTS if cfg[g] is not None}\n"
        "    build_component('protocol', cfg.protocol).prepare(Setup(parts, 0, None))\n"
        "    pickle.loads(pickle.dumps(parts['algorithm']))\n"
        "import sim.protocols.federated.server\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_final_model_loads_from_safetensors_and_scores_the_run_s_accuracy(
    ray_session, tmp_path
):
    """``model.safetensors`` holds the final model by its parameters' names (no pickle), with
    the run's config and parameters hashes; loaded into the model spec's module, it gives the
    test accuracy the run recorded."""
    import hashlib

    import torch
    from omegaconf import OmegaConf
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from sim import seeding
    from sim.runtime.config import build_component
    from sim.runtime.run import config_sha256

    result = sim.run(["protocol.rounds=3", "protocol.eval_every=3", "progress=false",
                      f"output_dir={tmp_path / 'run'}"])  # fmt: skip
    path = result.output_dir / "model.safetensors"
    weights = load_file(path)
    assert set(weights) == {"1.weight", "1.bias"}  # Flatten, then the linear layer
    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
    assert metadata["config_sha256"] == config_sha256(result.config)
    flat = np.concatenate([weights["1.weight"].ravel(), weights["1.bias"]])
    assert metadata["params_sha256"] == hashlib.sha256(flat.tobytes()).hexdigest()
    env = build_component("env", OmegaConf.create(result.config["env"]))
    data = env.load(seeding.rng(result.config["seed"], "env"))
    module = build_component("model", OmegaConf.create(result.config["model"])).build(
        data.input_shape, data.num_classes
    )
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    with torch.no_grad():
        predicted = module(torch.from_numpy(data.test_x)).argmax(dim=1).numpy()
    accuracy = float((predicted == data.test_y).mean())
    assert accuracy == pytest.approx(result.final["test_accuracy"], abs=1e-6)
