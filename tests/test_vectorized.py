"""The vectorised client engine gives the sequential engine's updates, to float rounding."""

import numpy as np
import pytest
import torch

import sim
from algorithms.federated.fedavg import FedAvg
from algorithms.federated.fedpa import FedPA
from models.linear import LinearRegression, LogisticRegression
from models.mlp import MLP
from sim.errors import ConfigError
from sim.interfaces.federated import FederatedData
from sim.protocols.federated.actors import check_client_engine, run_task
from sim.training.model import ClientData, ClientModel
from sim.training.sgd import local_sgd
from sim.training.vectorized import vectorized_sgd

DIM, CLASSES = 5, 3
MODELS = {
    "logistic": (LogisticRegression(), "classification", CLASSES),
    "mlp": (MLP(hidden=[8]), "classification", CLASSES),
    "linear": (LinearRegression(), "regression", 1),
}


def make_model(name: str) -> ClientModel:
    spec, task, outputs = MODELS[name]
    torch.manual_seed(0)
    return ClientModel(spec.build((DIM,), outputs), "cpu", task)


def make_population(sizes: list[int], task: str) -> FederatedData:
    rng = np.random.default_rng(1)
    n = sum(sizes)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    if task == "classification":
        y = rng.integers(0, CLASSES, n)
    else:
        y = (x @ rng.normal(size=DIM) + rng.normal(size=n)).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return FederatedData(
        x=x,
        y=y,
        order=rng.permutation(n),
        offsets=offsets,
        test_x=x,
        test_y=y,
        num_classes=CLASSES if task == "classification" else 1,
        task=task,
    )


def client_datas(data: FederatedData) -> list[ClientData]:
    return [
        ClientData.gather(data.x, data.y, data.client_indices(c), torch.device("cpu"))
        for c in range(data.num_clients)
    ]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(
    "sizes,batch_size,chunk_size",
    [([7, 20, 33], 8, None), ([7, 0, 33, 20], 8, 2), ([7, 20, 33], 64, None)],
)
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.01)])
def test_vectorized_sgd_equals_local_sgd_per_client(
    name, sizes, batch_size, chunk_size, momentum, weight_decay
):
    model = make_model(name)
    datas = client_datas(make_population(sizes, model.task))
    params = model.get_flat() + 0.1
    hyper = dict(epochs=2, batch_size=batch_size, lr=0.05, momentum=momentum)
    rngs = [np.random.default_rng(k) for k in range(len(sizes))]
    final, losses = vectorized_sgd(
        model, params, datas, rngs, **hyper, weight_decay=weight_decay, chunk_size=chunk_size
    )
    assert final.shape == (len(sizes), model.num_params) and losses.shape == (len(sizes),)
    for k, data in enumerate(datas):
        model.set_flat(params)
        rng = np.random.default_rng(k)
        loss = local_sgd(model, data, **hyper, weight_decay=weight_decay, rng=rng)
        np.testing.assert_allclose(final[k], model.get_flat(), rtol=1e-5, atol=1e-6)
        assert losses[k] == pytest.approx(loss, rel=1e-5, abs=1e-7)
        assert rngs[k].random() == rng.random()  # the same draws were taken from each generator


@pytest.mark.parametrize(
    "algorithm,round_index",
    [
        (FedAvg(client_lr=0.1, client_momentum=0.5, local_epochs=2, batch_size=8), 1),
        (FedAvg(client_lr=1e38, batch_size=8), 1),  # clients 1 and 3 overflow: dropped
        (FedPA(burn_in_rounds=1, local_epochs=3, batch_size=8), 1),  # burn-in: FedAvg's batch
    ],
)
@pytest.mark.parametrize("name", ["mlp", "linear"])
def test_run_task_vectorized_equals_sequential(algorithm, round_index, name):
    model = make_model(name)
    data = make_population([7, 20, 0, 33, 12], model.task)
    params, clients = model.get_flat(), np.array([0, 1, 2, 3])
    results = {
        engine: run_task(algorithm, model, data, params, clients, 3, round_index, engine)
        for engine in ("sequential", "vectorized")
    }
    (seq, seq_metrics), (vec, vec_metrics) = results["sequential"], results["vectorized"]
    assert vec.weight == seq.weight
    np.testing.assert_allclose(vec.weighted_sum, seq.weighted_sum, rtol=1e-5, atol=1e-5)
    assert len(vec_metrics) == len(seq_metrics) == 4
    for got, want in zip(vec_metrics, seq_metrics, strict=True):
        assert got.keys() == want.keys()
        assert got == pytest.approx(want, rel=1e-5, nan_ok=True)


def test_end_to_end_vectorized_run_matches_sequential(ray_session, tmp_path):
    common = [
        "protocol.rounds=3",
        "protocol.eval_every=3",
        "progress=false",
        "cluster.num_workers=1",  # one actor to start per run: most of this test's time
        "env.max_samples_per_client=100",
        "algorithm.client_momentum=0.5",
        "algorithm.local_epochs=2",
    ]
    runs = {
        engine: sim.run(
            [*common, f"protocol.client_engine={engine}", f"output_dir={tmp_path / engine}"]
        )
        for engine in ("sequential", "vectorized")
    }
    seq, vec = runs["sequential"], runs["vectorized"]
    assert vec.config["protocol"]["client_engine"] == "vectorized"
    np.testing.assert_allclose(vec.params, seq.params, rtol=1e-4, atol=1e-5)
    for got, want in zip(vec.history, seq.history, strict=True):
        assert got["examples"] == want["examples"]
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
    assert vec.final["test_accuracy"] == pytest.approx(seq.final["test_accuracy"], abs=0.01)


def test_bad_client_engine_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="client_engine: must be one of"):
        sim.run(
            ["protocol.client_engine=parallel", "progress=false", f"output_dir={tmp_path / 'run'}"]
        )
    assert not (tmp_path / "run").exists()


def test_algorithm_without_batch_update_is_refused():
    class Sequential:
        def client_update(self, model, params, data, rng, round_index): ...

    check_client_engine("vectorized", FedAvg())
    check_client_engine("sequential", Sequential())
    with pytest.raises(ConfigError, match=r"client_engine: Sequential declares engines \('seq"):
        check_client_engine("vectorized", Sequential())
    model = make_model("logistic")
    with pytest.raises(ConfigError, match="client_engine"):
        run_task(
            Sequential(),
            model,
            make_population([3], "classification"),
            model.get_flat(),
            np.array([0]),
            0,
            1,
            "vectorized",
        )
