"""The federated least-squares env: its closed-form optimum, and a regression run on Ray."""

import numpy as np
import pytest

import sim
from envs.least_squares import LeastSquares, global_optimum


def test_optimum_zeroes_the_sum_of_client_gradients():
    data = LeastSquares(num_clients=5, dim=4).load(np.random.default_rng(0))
    x, y, w = data.x.astype(np.float64), data.y.astype(np.float64), data.optimum.astype(np.float64)
    gradient_sum = sum(
        x[data.client_indices(i)].T @ (x[data.client_indices(i)] @ w - y[data.client_indices(i)])
        for i in range(data.num_clients)
    )
    assert np.linalg.norm(gradient_sum) < 1e-3 * np.linalg.norm(x.T @ y)
    assert data.task == "regression" and data.num_classes == 1


def test_clients_are_heterogeneous_in_curvature():
    data = LeastSquares(num_clients=3, dim=6, samples_per_client=2000).load(
        np.random.default_rng(1)
    )
    curvatures = [np.cov(data.x[data.client_indices(i)], rowvar=False) for i in range(3)]
    assert np.linalg.norm(curvatures[0] - curvatures[1]) > 0.1


def test_global_optimum_is_least_squares():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=30)
    np.testing.assert_allclose(global_optimum(x, y), np.linalg.lstsq(x, y, rcond=None)[0])


def test_invalid_fields_name_themselves():
    with pytest.raises(ValueError, match="condition"):
        LeastSquares(condition=0.5)


def test_regression_run_logs_distance_to_optimum(ray_session, tmp_path):
    result = sim.run(
        [
            "env=least_squares",
            "model=linear",
            "protocol.rounds=6",
            "protocol.eval_every=3",
            "progress=false",
            "algorithm.client_lr=0.05",
            "algorithm.local_epochs=5",
            "algorithm.batch_size=5",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    distances = [r["distance_to_optimum"] for r in result.history]
    assert len(distances) == 6 and distances[-1] < distances[0]
    assert "test_loss" in result.history[2] and "test_accuracy" not in result.history[2]
