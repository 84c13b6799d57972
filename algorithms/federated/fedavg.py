"""FedAvg: federated averaging.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS 2017 (arXiv 1602.05629), Algorithm 1; with a server
optimizer as in Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (arXiv 2003.00295).

Client i runs ``local_epochs`` epochs of minibatch SGD from the server parameters theta and
returns ``delta_i = theta - theta_i`` with weight ``n_i``, its number of examples
(``weighting=uniform``: weight 1). The server
takes ``mean_delta = sum_i n_i delta_i / sum_i n_i`` as a pseudo-gradient:
``theta <- theta - server_opt(mean_delta)``. Server SGD with lr 1 and no momentum is Algorithm 1's
``theta <- sum_i n_i theta_i / sum_i n_i``.

``client_update_batch`` (``client_engine=vectorized``) runs the same local SGD for a task's
clients at once (:func:`sim.training.vectorized.vectorized_sgd`). A variant that changes the
local objective overrides :meth:`FedAvg.loss_term` only (FedProx), one that changes what a client
sends :meth:`FedAvg.sent` only (DP-FedAvg's clipping), and both engines use them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from sim import checks
from sim.interfaces.federated import ClientUpdate, LossTerm, ServerState
from sim.training.optim import OPTIMIZERS, Optimizer, make_optimizer

WEIGHTINGS = ("examples", "uniform")  # a client's weight: its examples, or 1

if TYPE_CHECKING:  # torch: imported by the client methods, never by the server's process
    from sim.training.model import ClientData, ClientModel


@dataclass
class FedAvg:
    """FedAvg's hyperparameters (the fields) and its client and server updates."""

    engines: ClassVar[tuple[str, ...]] = ("sequential", "vectorized")

    client_lr: float = 0.05
    client_momentum: float = 0.0
    local_epochs: int = 1
    batch_size: int = 10
    weight_decay: float = 0.0
    server_optimizer: str = "sgd"
    server_lr: float = 1.0
    server_momentum: float = 0.0
    weighting: str = "examples"

    def __post_init__(self) -> None:
        checks.one_of(self, "weighting", WEIGHTINGS)
        checks.at_least(self, 0, "client_lr", "server_lr", "weight_decay")
        checks.in_interval(self, 0, 1, "client_momentum", "server_momentum")
        checks.at_least(self, 1, "local_epochs", "batch_size")
        if self.server_optimizer == "adam" and self.server_momentum:
            raise ValueError(
                "server_momentum: Adam has its own moments; set server_momentum=0 with adam "
                f"(got {self.server_momentum})"
            )
        checks.one_of(self, "server_optimizer", OPTIMIZERS)

    def optimizer(self) -> Optimizer:
        return make_optimizer(self.server_optimizer, self.server_lr, self.server_momentum)

    def server_init(self, params: np.ndarray) -> ServerState:
        return ServerState(params, self.optimizer().init(params))

    def weight(self, data: ClientData) -> float:
        """A client's aggregation weight: its examples, or 1 (``weighting=uniform``)."""
        return float(len(data)) if self.weighting == "examples" else 1.0

    def loss_term(self) -> LossTerm | None:
        """An extra term of the local objective (None: the model's loss alone)."""
        return None

    def sent(self, update: ClientUpdate) -> ClientUpdate:
        """What a client sends of its update (itself; DP-FedAvg clips it), on both engines."""
        return update

    def local_training(
        self,
        model: ClientModel,
        params: np.ndarray,
        data: ClientData,
        rng: np.random.Generator,
        on_step: Callable[[int], None] | None = None,
    ) -> float:
        """Load ``params`` and run the local epochs of SGD; returns the mean minibatch loss."""
        from sim.training.sgd import local_sgd

        model.set_flat(params)
        return local_sgd(
            model,
            data,
            epochs=self.local_epochs,
            batch_size=self.batch_size,
            lr=self.client_lr,
            momentum=self.client_momentum,
            weight_decay=self.weight_decay,
            rng=rng,
            loss_term=self.loss_term(),
            on_step=on_step,
        )

    def client_update(
        self,
        model: ClientModel,
        params: np.ndarray,
        data: ClientData,
        rng: np.random.Generator,
        round_index: int,
    ) -> ClientUpdate:
        train_loss = self.local_training(model, params, data, rng)
        delta = params - model.get_flat()
        return self.sent(ClientUpdate(delta, self.weight(data), {"train_loss": train_loss}))

    def client_update_batch(
        self,
        model: ClientModel,
        params: np.ndarray,
        datas: list[ClientData],
        rngs: list[np.random.Generator],
        round_index: int,
    ) -> list[ClientUpdate]:
        """``client_update`` for every ``(datas[k], rngs[k])``, trained together."""
        from sim.training.vectorized import vectorized_sgd

        final, losses = vectorized_sgd(
            model,
            params,
            datas,
            rngs,
            epochs=self.local_epochs,
            batch_size=self.batch_size,
            lr=self.client_lr,
            momentum=self.client_momentum,
            weight_decay=self.weight_decay,
            loss_term=self.loss_term(),
        )
        return [
            self.sent(ClientUpdate(params - theta, self.weight(data), {"train_loss": float(loss)}))
            for theta, data, loss in zip(final, datas, losses, strict=True)
        ]

    def server_update(
        self, state: ServerState, mean_delta: np.ndarray, round_index: int
    ) -> ServerState:
        step, opt_state = self.optimizer().update(mean_delta, state.opt_state)
        return ServerState(state.params - step, opt_state)
