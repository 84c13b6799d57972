"""Federated least squares with heterogeneous curvature, whose global optimum is closed-form.

The synthetic study of FedPA (Al-Shedivat et al., ICLR 2021, Sec. 5.1 / App. D): client i has
``f_i(w) = 1/(2 n_i) ||X_i w - y_i||^2 = 1/2 w^T A_i w - b_i^T w + const`` with
``A_i = X_i^T X_i / n_i`` and ``b_i = X_i^T y_i / n_i``. The global objective
``sum_i n_i f_i`` has its minimiser at ``w* = (sum_i n_i A_i)^{-1} sum_i n_i b_i``, computed here
exactly on the training data. Heterogeneity: each client's features have their own random
principal axes and a spectrum spread over ``condition`` (so the A_i differ), and its own local
optimum ``w_i ~ N(w_0, optimum_spread^2 I)``; y = X w_i + noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim import checks
from sim.interfaces.federated import FederatedData


def global_optimum(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``argmin_w sum_i 1/2 ||X_i w - y_i||^2`` over the pooled data (float64 normal equations)."""
    x64 = x.astype(np.float64)
    return np.linalg.solve(x64.T @ x64, x64.T @ y.astype(np.float64))


def client_features(rng: np.random.Generator, n: int, dim: int, condition: float) -> np.ndarray:
    """``n`` draws of N(0, Q diag(s) Q^T): random axes Q, s log-uniform in [1/condition, 1]."""
    axes = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    scales = np.exp(rng.uniform(-np.log(condition), 0.0, dim))
    return (rng.standard_normal((n, dim)) * np.sqrt(scales)) @ axes.T


@dataclass
class LeastSquares:
    """Federated linear regression; pair it with ``model=linear`` (w without bias)."""

    num_clients: int = 20
    dim: int = 10
    samples_per_client: int = 50
    test_samples_per_client: int = 50
    condition: float = 20.0  # eigenvalue spread of each client's feature covariance
    optimum_spread: float = 1.0  # std of the local optima around w_0
    noise: float = 1.0  # std of the label noise

    def __post_init__(self) -> None:
        names = ("num_clients", "dim", "samples_per_client", "test_samples_per_client")
        checks.at_least(self, 1, *names, "condition")
        checks.at_least(self, 0, "optimum_spread", "noise")
        examples = self.num_clients * (self.samples_per_client + self.test_samples_per_client)
        what = f"{examples} examples of {self.dim} features"
        larger = "dim" if self.dim > self.num_clients else "num_clients"
        checks.fits_in_memory(larger, 8.0 * examples * self.dim, what)

    def load(self, rng: np.random.Generator) -> FederatedData:
        n, m, d = self.samples_per_client, self.test_samples_per_client, self.dim
        center = rng.standard_normal(d)
        xs, ys, test_xs, test_ys = [], [], [], []
        for _ in range(self.num_clients):
            local_optimum = center + self.optimum_spread * rng.standard_normal(d)
            x = client_features(rng, n + m, d, self.condition)
            y = x @ local_optimum + self.noise * rng.standard_normal(n + m)
            xs.append(x[:n])
            ys.append(y[:n])
            test_xs.append(x[n:])
            test_ys.append(y[n:])
        x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32)
        return FederatedData(
            x=x,
            y=y,
            order=np.arange(len(y)),
            offsets=np.arange(self.num_clients + 1, dtype=np.int64) * n,
            test_x=np.concatenate(test_xs).astype(np.float32),
            test_y=np.concatenate(test_ys).astype(np.float32),
            num_classes=1,
            task="regression",
            optimum=global_optimum(x, y).astype(np.float32),
        )
