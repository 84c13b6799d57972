"""The Synthetic(alpha, beta) federated classification data of FedProx.

Li, Sahu, Zaheer, Sanjabi, Talwalkar & Smith, "Federated Optimization in Heterogeneous
Networks", MLSys 2020, Sec. 5.1; reference generator: github.com/litian96/FedProx,
``data/synthetic_*/generate_synthetic.py`` and ``data/synthetic_iid/generate_iid.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from sim import checks
from sim.interfaces.federated import FederatedData

_MAX_BATCH_ROWS = 1 << 18  # examples drawn and labelled at once (bounds temporary memory)

Params = tuple[np.ndarray, np.ndarray, np.ndarray]


EXPECTED_CLIENT_SIZE = float(np.exp(4.0 + 2.0**2 / 2) + 49.5)  # E[int(lognormal(4, 2))] + 50


def client_sizes(rng: np.random.Generator, num_clients: int, cap: int | None) -> np.ndarray:
    """Examples per client: ``int(lognormal(4, 2)) + 50``, then at most ``cap``."""
    sizes = rng.lognormal(4.0, 2.0, num_clients).astype(np.int64) + 50
    return sizes if cap is None else np.minimum(sizes, cap)


def train_sizes(sizes: np.ndarray, test_fraction: float) -> np.ndarray:
    """Training examples per client: ``int((1 - test_fraction) * n)`` as in FedProx, >= 1."""
    return np.maximum(1, ((1.0 - test_fraction) * sizes).astype(np.int64))


def feature_std(dim: int) -> np.ndarray:
    """Square roots of the diagonal covariance ``Sigma_jj = j ** -1.2``, ``j = 1..dim``."""
    return np.arange(1, dim + 1, dtype=np.float32) ** np.float32(-0.6)


def equal_count_batches(counts: np.ndarray, max_rows: int) -> Iterator[np.ndarray]:
    """Positions of runs of equal ``counts``, split into batches of about ``max_rows`` rows."""
    for run in np.split(np.arange(len(counts)), np.flatnonzero(np.diff(counts)) + 1):
        yield from np.array_split(run, max(1, -(-len(run) * int(counts[run[0]]) // max_rows)))


def label(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``argmax softmax(x W_k + b_k)`` (softmax is monotone, so the argmax of the logits).

    ``x``: (clients, n, dim), ``w``: (clients, dim, classes), ``b``: (clients, classes).
    """
    return np.argmax(np.matmul(x, w) + b[:, None, :], axis=-1)


def sample_block(
    rng: np.random.Generator, out: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> np.ndarray:
    """Fill ``out`` (clients, n, dim) in place with x ~ N(mean_k, diag(std ** 2))."""
    rng.standard_normal(out=out, dtype=np.float32)
    out *= std
    out += mean[:, None, :]
    return out


def draw_examples(
    rng: np.random.Generator, counts: np.ndarray, clients: np.ndarray, params: Params
) -> tuple[np.ndarray, np.ndarray]:
    """``counts[i]`` labelled examples of client ``clients[i]``, stored client after client.

    ``params`` is ``(W, b, v)`` indexed by client. Runs of equal counts are drawn as one batch
    (so pass sorted ``counts`` for speed), in threads, each batch with its own generator seeded
    from ``rng``: the result does not depend on the number of threads.
    """
    w, b, v = params
    dim = v.shape[1]
    std = feature_std(dim)
    starts = np.concatenate(([0], np.cumsum(counts)))
    x = np.empty((starts[-1], dim), dtype=np.float32)
    y = np.empty(starts[-1], dtype=np.int64)

    def fill(run: np.ndarray, seed: np.int64) -> None:
        ids, lo, hi = clients[run], starts[run[0]], starts[run[-1] + 1]
        block = x[lo:hi].reshape(len(run), counts[run[0]], dim)
        sample_block(np.random.default_rng(seed), block, v[ids], std)
        y[lo:hi] = label(block, w[ids], b[ids]).ravel()

    batches = list(equal_count_batches(counts, _MAX_BATCH_ROWS))
    with ThreadPoolExecutor() as pool:  # numpy releases the GIL; batches write disjoint rows
        list(pool.map(fill, batches, rng.integers(2**63, size=len(batches))))
    return x, y


@dataclass
class Synthetic:
    """Synthetic(alpha, beta): per-client logistic models (alpha) and feature means (beta).

    Non-IID: u_k ~ N(0, alpha), W_k ~ N(u_k, 1) (dim x classes), b_k ~ N(u_k, 1);
    B_k ~ N(0, beta), v_k ~ N(B_k, 1) in R^dim; x ~ N(v_k, Sigma), Sigma = diag(j^-1.2);
    y = argmax softmax(x W_k + b_k). IID: one W, b ~ N(0, 1) for all clients, x ~ N(0, Sigma)
    (alpha and beta are unused). Client sizes are ``int(lognormal(4, 2)) + 50``.

    Variance convention: N(m, S) takes a (co)variance, except that for the priors of u_k and B_k
    we follow the reference code, ``np.random.normal(0, alpha)``, whose second argument is a
    *standard deviation*: u_k has std alpha and B_k std beta (for the unit terms the two
    readings agree). Each client's examples are split into a training part (its federated data)
    and a test part, ``test_fraction`` of them, keeping >= 1 training example; the test parts
    of all clients form the global test set.
    """

    alpha: float = 1.0
    beta: float = 1.0
    iid: bool = False
    num_clients: int = 30
    dim: int = 60
    num_classes: int = 10
    test_fraction: float = 0.2
    max_samples_per_client: int | None = None

    def __post_init__(self) -> None:
        checks.at_least(self, 0, "alpha", "beta")
        checks.at_least(self, 1, "num_clients", "dim")
        checks.at_least(self, 2, "num_classes")
        checks.in_interval(self, 0, 1, "test_fraction")
        checks.at_least(self, 1, "max_samples_per_client", optional=True)
        what = f"{self.num_clients} clients of {self.dim} features"
        larger = "dim" if self.dim > self.num_clients else "num_clients"
        checks.fits_in_memory(larger, self.expected_bytes(), what)

    def expected_bytes(self) -> float:
        """About the memory the population takes: the mean client holds ``e^6 + 49.5`` (about
        453) examples of ``dim`` float32 features, or ``max_samples_per_client`` if fewer; a
        non-IID client also has its own (dim x classes) model and feature mean."""
        per_client = min(EXPECTED_CLIENT_SIZE, self.max_samples_per_client or np.inf)
        data = self.num_clients * per_client * (4.0 * self.dim + 8)
        models = 0 if self.iid else 4.0 * self.num_clients * self.dim * (self.num_classes + 1)
        return data + models

    def client_params(self, rng: np.random.Generator) -> Params:
        """Per-client ``(W, b, v)``: (K, dim, classes), (K, classes), (K, dim) float32."""
        k, d, c = self.num_clients, self.dim, self.num_classes
        if self.iid:
            w = rng.standard_normal((d, c), dtype=np.float32)
            b = rng.standard_normal(c, dtype=np.float32)
            v = np.zeros(d, dtype=np.float32)
            shared = np.broadcast_to  # one model and feature mean for every client
            return shared(w, (k, d, c)), shared(b, (k, c)), shared(v, (k, d))
        u = rng.normal(0.0, self.alpha, k).astype(np.float32)
        big_b = rng.normal(0.0, self.beta, k).astype(np.float32)
        v = big_b[:, None] + rng.standard_normal((k, d), dtype=np.float32)
        w = u[:, None, None] + rng.standard_normal((k, d, c), dtype=np.float32)
        b = u[:, None] + rng.standard_normal((k, c), dtype=np.float32)
        return w, b, v

    def load(self, rng: np.random.Generator) -> FederatedData:
        """Draw the population; ``order`` maps each client to its rows of ``x``."""
        sizes = client_sizes(rng, self.num_clients, self.max_samples_per_client)
        n_train = train_sizes(sizes, self.test_fraction)
        params = self.client_params(rng)
        # Rows are stored by increasing client size, so equal-size clients are drawn together.
        by_size = np.argsort(sizes, kind="stable")
        x, y = draw_examples(rng, n_train[by_size], by_size, params)
        test_x, test_y = draw_examples(rng, (sizes - n_train)[by_size], by_size, params)
        offsets = np.concatenate(([0], np.cumsum(n_train))).astype(np.int64)
        first_row = np.empty(self.num_clients, dtype=np.int64)
        first_row[by_size] = np.cumsum(n_train[by_size]) - n_train[by_size]
        order = np.repeat(first_row - offsets[:-1], n_train) + np.arange(offsets[-1])
        return FederatedData(
            x, y, order=order, offsets=offsets, test_x=test_x, test_y=test_y,
            num_classes=self.num_classes,
        )  # fmt: skip
