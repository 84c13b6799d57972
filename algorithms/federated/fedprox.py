"""FedProx: FedAvg with a proximal term in each client's local objective.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in Heterogeneous Networks",
MLSys 2020 (arXiv 1812.06127), Algorithm 2: client k approximately minimises

    h_k(w; w^t) = F_k(w) + mu/2 ||w - w^t||^2

from the server parameters w^t (here: FedAvg's local SGD on that objective); the server step is
FedAvg's. ``mu = 0`` is FedAvg. The term is :func:`proximal_term`, handed to the shared local
training of both client engines through :meth:`FedAvg.loss_term`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from algorithms.federated.fedavg import FedAvg
from sim import checks
from sim.interfaces.federated import LossTerm

if TYPE_CHECKING:  # the term is built of torch ops on the tensors it is given
    import torch


def proximal_term(mu: float) -> LossTerm:
    """``(w, w_server) -> mu/2 sum_p ||w_p - w_server_p||^2`` over the parameter tensors."""

    def term(params: Sequence[torch.Tensor], server: Sequence[torch.Tensor]) -> torch.Tensor:
        squared = sum(((p - s) ** 2).sum() for p, s in zip(params, server, strict=True))
        return 0.5 * mu * squared

    return term


@dataclass
class FedProx(FedAvg):
    """FedAvg's hyperparameters plus ``mu``, the weight of the proximal term."""

    engines: ClassVar[tuple[str, ...]] = ("sequential", "vectorized")

    mu: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.at_least(self, 0, "mu")

    def loss_term(self) -> LossTerm:
        return proximal_term(self.mu)
