"""Local minibatch training: epochs of shuffled minibatches with any torch optimizer, the model's
loss plus an optional :data:`~sim.interfaces.federated.LossTerm` of the parameters (e.g.
FedProx's proximal term). Pure torch; no Ray here."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sim.interfaces.federated import LossTerm
from sim.training.model import ClientData, ClientModel


def train_epochs(
    model: ClientModel,
    data: ClientData,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    loss_term: LossTerm | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """``epochs`` passes over ``data`` in minibatches shuffled by ``rng``, one ``optimizer`` step
    each, minimising the model's loss plus ``loss_term(params, params at the start)``.

    Returns each epoch's mean minibatch loss (the model's loss, without ``loss_term``).
    ``on_step(step)`` runs after every optimizer step (1, 2, ...), e.g. to collect SGD iterates.
    """
    params = list(model.module.parameters())
    start = [param.detach().clone() for param in params] if loss_term is not None else []
    model.module.train()
    epoch_losses, steps = [], 0
    for _ in range(epochs):
        total, batches = torch.zeros((), device=model.device), 0
        for xb, yb in data.batches(batch_size, rng):
            loss = model.loss(model.module(xb), yb)
            objective = loss if loss_term is None else loss + loss_term(params, start)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            total += loss.detach()
            batches += 1
            steps += 1
            if on_step is not None:
                on_step(steps)
        epoch_losses.append(float(total) / max(batches, 1))
    return epoch_losses


def local_sgd(
    model: ClientModel,
    data: ClientData,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    rng: np.random.Generator,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    loss_term: LossTerm | None = None,
    on_step: Callable[[int], None] | None = None,
) -> float:
    """``epochs`` passes of minibatch SGD (``torch.optim.SGD``); returns the mean minibatch loss."""
    optimizer = torch.optim.SGD(
        model.module.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    losses = train_epochs(
        model,
        data,
        optimizer,
        epochs=epochs,
        batch_size=batch_size,
        rng=rng,
        loss_term=loss_term,
        on_step=on_step,
    )
    return float(np.mean(losses)) if losses else 0.0
