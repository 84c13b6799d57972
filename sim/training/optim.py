"""Server optimizers as Optax-style ``init``/``update`` pairs on flat parameter vectors.

The server treats the averaged client delta as a pseudo-gradient (Reddi et al., "Adaptive
Federated Optimization", ICLR 2021, Alg. 2): ``theta <- theta - step`` with
``step = update(mean_delta)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

OptState = dict[str, np.ndarray]


@dataclass(frozen=True)
class Optimizer:
    """``init(params) -> state``; ``update(gradient, state) -> (step, state)``."""

    init: Callable[[np.ndarray], OptState]
    update: Callable[[np.ndarray, OptState], tuple[np.ndarray, OptState]]


def sgd(lr: float, momentum: float = 0.0) -> Optimizer:
    """Heavy-ball SGD: ``m <- momentum m + g``; ``step = lr m`` (PyTorch's convention)."""

    def init(params: np.ndarray) -> OptState:
        return {"momentum": np.zeros_like(params)} if momentum else {}

    def update(gradient: np.ndarray, state: OptState) -> tuple[np.ndarray, OptState]:
        if not momentum:
            return lr * gradient, state
        buffer = momentum * state["momentum"] + gradient
        return lr * buffer, {"momentum": buffer}

    return Optimizer(init, update)


def adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba, ICLR 2015, Alg. 1) with bias correction."""

    def init(params: np.ndarray) -> OptState:
        zeros = np.zeros_like(params)
        return {"m": zeros, "v": zeros.copy(), "count": np.zeros((), np.int64)}

    def update(gradient: np.ndarray, state: OptState) -> tuple[np.ndarray, OptState]:
        count = state["count"] + 1
        m = b1 * state["m"] + (1 - b1) * gradient
        v = b2 * state["v"] + (1 - b2) * gradient * gradient
        m_hat = m / (1 - b1**count)
        v_hat = v / (1 - b2**count)
        step = lr * m_hat / (np.sqrt(v_hat) + eps)
        return step.astype(gradient.dtype), {"m": m, "v": v, "count": count}

    return Optimizer(init, update)


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(name: str, lr: float, momentum: float = 0.0) -> Optimizer:
    """The server optimizer named in a config (``sgd`` with optional momentum, or ``adam``)."""
    if name == "sgd":
        return sgd(lr, momentum)
    if name == "adam":
        return adam(lr)
    raise ValueError(f"server_optimizer: must be one of {OPTIMIZERS} (got {name!r})")
