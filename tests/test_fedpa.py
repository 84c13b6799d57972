"""FedPA's math: the dynamic-programming delta against a dense solve, its limits, the sampler."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from algorithms.federated.fedavg import FedAvg
from algorithms.federated.fedpa import FedPA, posterior_delta, shrinkage_covariance
from sim.training.model import ClientData, ClientModel


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 12),
    d=st.integers(1, 50),
    rho=st.floats(0.0, 10.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_dp_delta_equals_dense_shrinkage_solve(n, d, rho, seed):
    rng = np.random.default_rng(seed)
    samples = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, size=d) + rng.normal(size=d)
    theta = rng.normal(size=d)
    dense = np.linalg.solve(shrinkage_covariance(samples, rho), theta - samples.mean(0))
    np.testing.assert_allclose(posterior_delta(theta, samples, rho), dense, rtol=1e-8, atol=1e-10)


def test_shrinkage_covariance_by_hand():
    samples = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]])
    # mean (1, 1); unbiased S = [[1, 0], [0, 3]]; rho_n = 1 / (1 + 2 * 0.5) = 1/2
    expected = 0.5 * np.eye(2) + 0.5 * np.array([[1.0, 0.0], [0.0, 3.0]])
    np.testing.assert_allclose(shrinkage_covariance(samples, 0.5), expected)


def test_rho_zero_gives_fedavg_direction():
    rng = np.random.default_rng(1)
    samples, theta = rng.normal(size=(6, 9)), rng.normal(size=9)
    np.testing.assert_allclose(posterior_delta(theta, samples, 0.0), theta - samples.mean(0))


def test_delta_tends_to_the_local_gradient_with_exact_posterior_samples():
    # Local objective 1/2 theta^T A theta - b^T theta: posterior N(A^-1 b, A^-1) at temperature 1.
    rng = np.random.default_rng(2)
    d = 5
    q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    a = q @ np.diag([0.3, 0.7, 1.0, 2.0, 4.0]) @ q.T
    b = rng.normal(size=d)
    theta = rng.normal(size=d)
    gradient = a @ theta - b
    errors = []
    for n in (100, 1_000, 20_000):
        samples = rng.multivariate_normal(np.linalg.solve(a, b), np.linalg.inv(a), size=n)
        delta = posterior_delta(theta, samples, rho=1.0)  # rho_n = 1/n -> 0
        errors.append(np.linalg.norm(delta - gradient) / np.linalg.norm(gradient))
    assert errors[-1] < 0.05
    assert errors[-1] < errors[0]


def test_posterior_delta_never_forms_a_d_by_d_matrix():
    # d = 200,000 float64: a d x d matrix would need 320 GB.
    rng = np.random.default_rng(3)
    samples = rng.normal(size=(4, 200_000))
    delta = posterior_delta(np.zeros(200_000), samples, 0.01)
    assert delta.shape == (200_000,) and np.isfinite(delta).all()


def linear_client():
    x = torch.tensor(np.random.default_rng(4).normal(size=(40, 3)), dtype=torch.float32)
    y = (x[:, 0] > 0).long()
    return ClientModel(nn.Sequential(nn.Linear(3, 2))), ClientData(x, y)


def test_burn_in_rounds_are_fedavg():
    model, data = linear_client()
    params = np.zeros(8, np.float32)
    kwargs = dict(client_lr=0.1, client_momentum=0.0, local_epochs=3, batch_size=10)
    fedpa = FedPA(burn_in_rounds=2, **kwargs).client_update(
        model, params, data, np.random.default_rng(0), 2
    )
    fedavg = FedAvg(**kwargs).client_update(model, params, data, np.random.default_rng(0), 2)
    np.testing.assert_array_equal(fedpa.delta, fedavg.delta)


@pytest.mark.parametrize("steps_per_sample,expected_samples", [(None, 4), (3, 5)])
def test_sampler_takes_iterate_averages_after_burn_in(steps_per_sample, expected_samples):
    # 40 examples, batch 10: 4 steps per epoch; 5 epochs with 1 burn-in epoch leave steps 5..20.
    model, data = linear_client()
    algorithm = FedPA(
        burn_in_rounds=0,
        local_epochs=5,
        burn_in_epochs=1,
        batch_size=10,
        rho=0.5,
        steps_per_sample=steps_per_sample,
    )
    params = np.zeros(8, np.float32)
    update = algorithm.client_update(model, params, data, np.random.default_rng(0), 1)
    assert update.metrics["num_samples"] == expected_samples
    # Replay the same SGD run, build the window means by hand, and solve densely.
    iterates = []
    algorithm.local_training(
        model,
        params,
        data,
        np.random.default_rng(0),
        on_step=lambda step: iterates.append(model.get_flat().astype(np.float64)),
    )
    window = steps_per_sample or 4
    after = np.array(iterates[4:])
    samples = np.stack(
        [after[i * window : (i + 1) * window].mean(0) for i in range(expected_samples)]
    )  # with windows of 3, the 16 steps give 5 samples; the last step is not a sample
    expected = np.linalg.solve(shrinkage_covariance(samples, 0.5), params - samples.mean(0))
    np.testing.assert_allclose(update.delta, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "field,value",
    [("rho", -1.0), ("burn_in_epochs", 5), ("steps_per_sample", 0), ("burn_in_rounds", -1)],
)
def test_invalid_hyperparameters_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        FedPA(**{field: value})


def run_rounds(algorithm, data, rounds: int) -> float:
    """Full-participation rounds without Ray; the final distance to the global optimum."""
    from models.linear import LinearRegression
    from sim.protocols.federated.actors import run_task
    from sim.protocols.federated.server import gather

    model = ClientModel(LinearRegression().build(data.input_shape, 1), "cpu", "regression")
    state = algorithm.server_init(np.zeros(data.input_shape[0], np.float32))
    clients = np.arange(data.num_clients)
    for round_index in range(1, rounds + 1):
        result, _ = run_task(algorithm, model, data, state.params, clients, 0, round_index)
        mean_delta = gather([result], len(state.params), len(clients)).mean().astype(np.float32)
        state = algorithm.server_update(state, mean_delta, round_index)
    return float(np.linalg.norm(state.params - data.optimum))


def test_fedpa_beats_fedavg_bias_on_heterogeneous_least_squares():
    # The paper's point (Sec. 5.1): with many local steps FedAvg converges to a biased point;
    # FedPA's posterior deltas move it much closer to the global optimum.
    from envs.least_squares import LeastSquares

    env = LeastSquares(num_clients=6, dim=4, samples_per_client=30, condition=100.0, noise=2.0)
    data = env.load(np.random.default_rng(0))
    shared = dict(
        client_lr=0.05,
        client_momentum=0.0,
        local_epochs=10,
        batch_size=5,
        server_lr=0.1,
        server_momentum=0.0,
    )
    fedavg = run_rounds(FedAvg(**shared), data, 30)
    fedpa = run_rounds(FedPA(burn_in_rounds=5, burn_in_epochs=2, rho=1.0, **shared), data, 30)
    assert fedpa < 0.6 * fedavg, (fedpa, fedavg)
