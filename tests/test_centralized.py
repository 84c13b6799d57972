"""The centralized protocol: a round is the algorithm's update on the pooled data (checked by
hand), it resumes exactly, runs on Fashion-MNIST, and refuses what it cannot train."""

import json

import numpy as np
import pytest
import torch

import sim
from algorithms.federated.fedavg import FedAvg
from envs.synthetic import Synthetic
from models.linear import LogisticRegression
from sim import seeding
from sim.errors import CohortError
from sim.training.model import ClientData, ClientModel, initial_params

QUIET = ["progress=false", "env.max_samples_per_client=200"]


def test_a_round_is_local_sgd_on_the_pooled_data(ray_session, tmp_path):
    result = sim.run(
        ["protocol=centralized", "protocol.rounds=1", *QUIET, f"output_dir={tmp_path / 'run'}"]
    )
    # By hand: the same population, initial parameters and client stream, one client of all.
    data = Synthetic(max_samples_per_client=200).load(seeding.rng(0, "env"))
    build = lambda: LogisticRegression().build(data.input_shape, data.num_classes)  # noqa: E731
    params = initial_params(build, seeding.torch_seed(0, "init"))
    model = ClientModel(build())
    pooled = ClientData.gather(data.x, data.y, data.order, torch.device("cpu"))
    update = FedAvg().client_update(model, params, pooled, seeding.rng(0, "client", 1, 0), 1)
    np.testing.assert_allclose(result.params, params - update.delta, rtol=1e-6, atol=1e-7)
    record = result.history[0]
    assert record["clients"] == 1 and record["examples"] == len(data.y)
    assert "test_accuracy" in record and "client_accuracy_mean" not in record
    summary = json.loads((result.output_dir / "summary.json").read_text())
    assert summary["config"]["protocol"]["_target_"].endswith("Centralized")


@pytest.mark.slow  # about 28 s: in `pytest -m slow`; test_resume.py resumes the round loop
def test_resume_continues_exactly(ray_session, tmp_path):
    common = ["protocol=centralized", "protocol.eval_every=2", *QUIET]
    whole = sim.run([*common, "protocol.rounds=4", f"output_dir={tmp_path / 'whole'}"])
    sim.run([*common, "protocol.rounds=2", f"output_dir={tmp_path / 'cut'}"])
    resumed = sim.run(
        [*common, "protocol.rounds=4", "resume=true", f"output_dir={tmp_path / 'cut'}"]
    )
    np.testing.assert_array_equal(resumed.params, whole.params)
    strip = lambda h: [{k: v for k, v in r.items() if k != "round_time_s"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)
    with pytest.raises(CohortError, match="protocol.eval_every"):
        sim.run([*common, "protocol.rounds=5", "protocol.eval_every=1", "resume=true",
                 f"output_dir={tmp_path / 'cut'}"])  # fmt: skip


def test_runs_on_fashion_mnist(ray_session, tmp_path):
    result = sim.run(
        [
            "protocol=centralized",
            "env=fashion_mnist",
            "env.train_subset=3000",
            "model=mlp",
            "algorithm.batch_size=32",
            "protocol.rounds=2",
            "progress=false",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    assert result.history[-1]["examples"] == 3000
    assert result.final["test_accuracy"] > 0.6  # 10 classes; two epochs over 3,000 images


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["algorithm=margin", "protocol=centralized"], "protocol=centralized needs a federated"),
        (["env=tabular"], "env: protocol=centralized needs a federated population"),
    ],
)
def test_refuses_what_it_cannot_train(overrides, needle, tmp_path):
    with pytest.raises(CohortError, match=needle):
        sim.run(["protocol=centralized", *overrides, f"output_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()
