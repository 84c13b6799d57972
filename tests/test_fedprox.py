"""FedProx: the proximal term by hand, mu = 0 is FedAvg exactly, both engines agree, and an
algorithm's engines are declared, never inherited."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import sim
from algorithms.federated.fedavg import FedAvg
from algorithms.federated.fedprox import FedProx, proximal_term
from sim.errors import ConfigError
from sim.protocols.federated.actors import check_client_engine, run_task
from sim.training.model import ClientData
from tests.test_vectorized import make_model, make_population


def test_proximal_term_by_hand():
    params = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    server = [torch.zeros(2), torch.tensor([[1.0]])]
    # mu/2 (1 + 4 + 4) with mu = 0.5
    assert float(proximal_term(0.5)(params, server)) == pytest.approx(2.25)


def test_two_full_batch_steps_by_hand():
    # Linear regression, one batch of all n examples: g(w) = X^T (X w - y) / n. FedProx's second
    # step adds mu (w1 - w0): w2 = w1 - lr (g(w1) + mu (w1 - w0)); delta = w0 - w2.
    model = make_model("linear")
    data = make_population([12], "regression")
    x, y = data.x.astype(np.float64), data.y.astype(np.float64)
    lr, mu = 0.1, 3.0
    w0 = np.full(x.shape[1], 0.2)
    grad = lambda w: x.T @ (x @ w - y) / len(y)  # noqa: E731
    w1 = w0 - lr * grad(w0)
    w2 = w1 - lr * (grad(w1) + mu * (w1 - w0))
    client = ClientData.gather(data.x, data.y, data.client_indices(0), torch.device("cpu"))
    algorithm = FedProx(client_lr=lr, batch_size=12, local_epochs=2, mu=mu)
    update = algorithm.client_update(
        model, w0.astype(np.float32), client, np.random.default_rng(0), 1
    )
    np.testing.assert_allclose(update.delta, w0 - w2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
@pytest.mark.parametrize("name", ["mlp", "linear"])
def test_mu_zero_is_fedavg_exactly(engine, name):
    model = make_model(name)
    data = make_population([7, 20, 0, 33], model.task)
    params, clients = model.get_flat(), np.arange(4)
    hyper = dict(client_lr=0.1, client_momentum=0.5, local_epochs=2, batch_size=8)
    prox, _ = run_task(FedProx(mu=0.0, **hyper), model, data, params, clients, 3, 1, engine)
    plain, _ = run_task(FedAvg(**hyper), model, data, params, clients, 3, 1, engine)
    np.testing.assert_array_equal(prox.weighted_sum, plain.weighted_sum)


@pytest.mark.parametrize("name", ["mlp", "linear"])
def test_engines_agree_and_the_term_matters(name):
    model = make_model(name)
    data = make_population([7, 20, 0, 33, 12], model.task)
    params, clients = model.get_flat(), np.arange(5)
    algorithm = FedProx(mu=5.0, client_lr=0.05, local_epochs=3, batch_size=8)
    sums = {
        engine: run_task(algorithm, model, data, params, clients, 3, 1, engine)[0].weighted_sum
        for engine in ("sequential", "vectorized")
    }
    np.testing.assert_allclose(sums["vectorized"], sums["sequential"], rtol=1e-5, atol=1e-5)
    fedavg = FedAvg(client_lr=0.05, local_epochs=3, batch_size=8)
    plain = run_task(fedavg, model, data, params, clients, 3, 1, "sequential")[0].weighted_sum
    assert np.abs(plain - sums["sequential"]).max() > 1e-3  # mu = 5 pulls the clients back


@dataclass
class ReadmeFedProx(FedAvg):
    """FedProx as a subclass that restates client_update (and declares no engines)."""

    mu: float = 5.0

    def client_update(self, model, params, data, rng, round_index):
        raise NotImplementedError


def test_engines_are_declared_not_inherited():
    check_client_engine("vectorized", FedProx())
    check_client_engine("sequential", ReadmeFedProx())
    with pytest.raises(ConfigError, match="ReadmeFedProx declares engines"):
        check_client_engine("vectorized", ReadmeFedProx())


def test_fedprox_runs_on_both_engines(ray_session, tmp_path):
    common = [
        "algorithm=fedprox",
        "algorithm.mu=1.0",
        "protocol.rounds=2",
        "protocol.eval_every=2",
        "env.max_samples_per_client=100",
        "cluster.num_workers=1",
        "progress=false",
    ]
    runs = [
        sim.run([*common, f"protocol.client_engine={e}", f"output_dir={tmp_path / e}"])
        for e in ("sequential", "vectorized")
    ]
    assert runs[0].config["algorithm"]["mu"] == 1.0
    np.testing.assert_allclose(runs[0].params, runs[1].params, rtol=1e-4, atol=1e-5)
