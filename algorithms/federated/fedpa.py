"""FedPA: federated posterior averaging.

Al-Shedivat, Gillenwater, Xing, Rostamizadeh, "Federated Learning via Posterior Averaging: A New
Perspective and Practical Algorithms", ICLR 2021 (arXiv 2010.05273).

Each client approximates its local posterior N(mu_i, Sigma_i) from MCMC samples and sends
``delta_i = Sigma_i^{-1} (theta - mu_i)`` (Sec. 3, Eq. 5); averaging deltas gives the gradient of
``sum_i 1/2 (theta - mu_i)^T Sigma_i^{-1} (theta - mu_i)``, whose minimiser is the global
posterior mode. The pieces, in the notation of the code:

- IASG sampler (Sec. 4, Alg. 3; the authors' TFF code): from the server parameters run local SGD;
  after ``burn_in_epochs`` epochs, every ``steps_per_sample`` SGD steps (default: one epoch) the
  average of those steps' iterates is one sample x_t, until the ``local_epochs`` end (a last,
  incomplete window is not a sample); the count is logged as the metric ``num_samples``.
- Shrinkage covariance (Sec. 3.2): ``Sigma_hat = rho_n I + (1 - rho_n) S``,
  ``rho_n = 1 / (1 + (n - 1) rho)``, S the unbiased sample covariance of the n samples.
- ``delta = Sigma_hat^{-1} (theta - mean(x))`` by the dynamic program of Sec. 3.3 / App. C
  (:func:`posterior_delta`): O(n^2 d) time, O(n d) memory, never a d x d matrix.
- Schedule: FedAvg deltas for the first ``burn_in_rounds`` rounds, posterior deltas after.

The server update is FedAvg's (server SGD with momentum, or Adam). Defaults are the reference's
EMNIST setting (client lr 0.02, momentum 0.9; server lr 0.5, momentum 0.9; rho 0.01; 1 burn-in
epoch; 400 burn-in rounds) except ``burn_in_rounds``, which experiments set for their length.

With ``client_engine=vectorized``, burn-in rounds train a task's clients together (FedAvg's
``client_update_batch``); the sampling rounds run ``client_update`` client by client, since the
sampler reads every SGD iterate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from algorithms.federated.fedavg import FedAvg
from sim import checks
from sim.interfaces.federated import ClientUpdate

if TYPE_CHECKING:  # torch: only client workers use it (the server's process never imports it)
    from sim.training.model import ClientData, ClientModel


def shrinkage_covariance(samples: np.ndarray, rho: float) -> np.ndarray:
    """``rho_n I + (1 - rho_n) S`` for samples of shape (n, d); dense, for tests and small d."""
    n, d = samples.shape
    rho_n = 1.0 / (1.0 + (n - 1) * rho)
    sample_cov = np.cov(samples, rowvar=False, ddof=1).reshape(d, d) if n > 1 else np.zeros((d, d))
    return rho_n * np.eye(d) + (1.0 - rho_n) * sample_cov


def posterior_delta(theta: np.ndarray, samples: np.ndarray, rho: float) -> np.ndarray:
    """``solve(shrinkage_covariance(samples, rho), theta - mean(samples))`` without a d x d matrix.

    The dynamic program of FedPA (App. C): the inverse of the running shrinkage estimate is
    updated by Sherman-Morrison as each sample arrives; ``v_k`` are the rank-one directions.
    Computed in float64.
    """
    x = np.asarray(samples, np.float64)
    n, d = x.shape
    if n == 0:
        raise ValueError("posterior_delta needs at least one sample")
    delta = np.asarray(theta, np.float64) - x[0]
    mean = x[0].copy()
    directions = np.empty((n + 1, d))  # row k holds v_k (k = 2..n; rows 0-1 unused)
    uv = np.empty(n + 1)  # u_k . v_k
    k = np.arange(n + 1, dtype=np.float64)
    gammas = np.divide(rho * (k - 1), k, out=np.zeros(n + 1), where=k > 0)  # rho (k-1)/k
    for t in range(2, n + 1):
        u = x[t - 1] - mean
        # v = u - sum_{k<t} g_k (v_k . u) / (1 + g_k u_k.v_k) v_k: the coefficients use u, not
        # the running v, so the Sherman-Morrison corrections apply at once.
        g = gammas[2:t]
        v = u - (g * (directions[2:t] @ u) / (1 + g * uv[2:t])) @ directions[2:t]
        gamma, uv_t = gammas[t], u @ v
        c = gamma * (t * (u @ delta) - uv_t) / (1 + gamma * uv_t)
        delta -= (1 + c) * v / t
        directions[t], uv[t] = v, uv_t
        mean = ((t - 1) * mean + x[t - 1]) / t
    return delta * (1 + (n - 1) * rho)


@dataclass
class FedPA(FedAvg):
    """FedPA's hyperparameters and client update (the server update is FedAvg's).

    Local work per round is ``local_epochs`` epochs for FedPA and FedAvg alike. After the
    ``burn_in_epochs``, each window of ``steps_per_sample`` steps (default: one epoch) gives one
    sample, so the reference's 5 epochs with 1 burn-in epoch give 4 samples per round.
    """

    engines: ClassVar[tuple[str, ...]] = ("sequential", "vectorized")

    client_lr: float = 0.02
    client_momentum: float = 0.9
    local_epochs: int = 5
    batch_size: int = 20
    server_lr: float = 0.5
    server_momentum: float = 0.9
    burn_in_rounds: int = 400
    burn_in_epochs: int = 1
    steps_per_sample: int | None = None  # None: one sample per local epoch (the reference)
    rho: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.at_least(self, 0, "burn_in_rounds", "rho")
        checks.at_least(self, 1, "steps_per_sample", optional=True)
        if not 0 <= self.burn_in_epochs < self.local_epochs:
            raise ValueError(
                f"burn_in_epochs: must be in [0, local_epochs={self.local_epochs}) "
                f"(got {self.burn_in_epochs})"
            )

    def client_update(
        self,
        model: ClientModel,
        params: np.ndarray,
        data: ClientData,
        rng: np.random.Generator,
        round_index: int,
    ) -> ClientUpdate:
        if round_index <= self.burn_in_rounds:
            return super().client_update(model, params, data, rng, round_index)
        steps_per_epoch = -(-len(data) // self.batch_size)
        burn_in_steps = self.burn_in_epochs * steps_per_epoch
        window = self.steps_per_sample or steps_per_epoch
        samples: list[np.ndarray] = []
        running = np.zeros(params.shape, np.float64)

        def collect(step: int) -> None:
            """After SGD step ``step``: add the iterate; close a sample every ``window`` steps."""
            nonlocal running
            if step > burn_in_steps:
                running += model.get_flat()
                if (step - burn_in_steps) % window == 0:
                    samples.append(running / window)
                    running = np.zeros_like(running)

        loss = self.local_training(model, params, data, rng, on_step=collect)
        if not samples:  # a window longer than the local run: fall back to the FedAvg delta
            samples.append(model.get_flat().astype(np.float64))
        stacked = np.stack(samples)
        delta = posterior_delta(params, stacked, self.rho).astype(params.dtype)
        metrics = {"train_loss": loss, "num_samples": float(len(samples))}
        return self.sent(ClientUpdate(delta, self.weight(data), metrics))

    def client_update_batch(
        self,
        model: ClientModel,
        params: np.ndarray,
        datas: list[ClientData],
        rngs: list[np.random.Generator],
        round_index: int,
    ) -> list[ClientUpdate]:
        """FedAvg's batched update in burn-in rounds; after them ``client_update`` per client."""
        if round_index <= self.burn_in_rounds:
            return super().client_update_batch(model, params, datas, rngs, round_index)
        return [
            self.client_update(model, params, data, rng, round_index)
            for data, rng in zip(datas, rngs, strict=True)
        ]
