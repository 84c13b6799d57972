"""Local minibatch training: epochs of shuffled minibatches with any torch optimizer, the model's
loss plus an optional :data:`~sim.interfaces.federated.LossTerm` of the parameters (e.g.
FedProx's proximal term); and the optimizers :class:`SGD` (the clients') and :class:`AdamW`
(the pool learner's). Pure torch; no Ray here."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from sim.interfaces.federated import LossTerm
from sim.training.model import ClientData, ClientModel


class PlainOptimizer:
    """An optimizer written in plain tensor operations (bit for bit ``torch.optim``'s, whose
    import costs 2 s a process): its parameters, and ``zero_grad`` (gradients always set to None,
    as ``torch.optim`` does by default)."""

    def __init__(self, params: Iterable[torch.nn.Parameter]) -> None:
        self.params = list(params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            param.grad = None


class SGD(PlainOptimizer):
    """Minibatch SGD with momentum (dampening 0, no Nesterov) and L2 weight decay, computed
    exactly as ``torch.optim.SGD`` computes it for CPU tensors (its single-tensor update), so the
    numbers are bit for bit the same (tests/test_optim.py, on CPU; on CUDA torch takes its
    foreach path, the same elementwise arithmetic, untested here). Written out because
    constructing a ``torch.optim`` optimizer imports ``torch._dynamo``, about 2 s of CPU in every
    process, which each client worker paid in its first round."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        """``g = grad + weight_decay * p``; ``b = momentum * b + g`` (``b = g`` at the first
        step); ``p = p - lr * b`` (``p - lr * g`` without momentum)."""
        for i, param in enumerate(self.params):
            grad = param.grad
            if grad is None:
                continue
            if self.weight_decay != 0:
                grad = grad.add(param, alpha=self.weight_decay)
            if self.momentum != 0:
                buffer = self.buffers[i]
                if buffer is None:
                    buffer = self.buffers[i] = grad.detach().clone()
                else:
                    buffer.mul_(self.momentum).add_(grad, alpha=1)
                grad = buffer
            param.add_(grad, alpha=-self.lr)


class AdamW(PlainOptimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay
    Regularization", ICLR 2019, Algorithm 2), computed exactly as ``torch.optim.AdamW`` computes
    it (its single-tensor update; no AMSGrad), so the numbers are bit for bit the same
    (tests/test_optim.py). Written out for the reason :class:`SGD` is."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.first = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.second = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]
        self.steps = [0] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        """Per parameter with a gradient, at its step t: ``p *= 1 - lr wd``;
        ``m = lerp(m, g, 1 - b1)``; ``v = b2 v + (1 - b2) g^2``;
        ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""
        beta1, beta2 = self.betas
        for i, param in enumerate(self.params):
            grad = param.grad
            if grad is None:
                continue
            self.steps[i] += 1
            step = self.steps[i]
            if self.weight_decay != 0:
                param.mul_(1 - self.lr * self.weight_decay)
            self.first[i].lerp_(grad, 1 - beta1)
            self.second[i].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = self.lr / (1 - beta1**step)
            denom = (self.second[i].sqrt() / (1 - beta2**step) ** 0.5).add_(self.eps)
            param.addcdiv_(self.first[i], denom, value=-step_size)


def train_epochs(
    model: ClientModel,
    data: ClientData,
    optimizer: torch.optim.Optimizer | PlainOptimizer,
    *,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    loss_term: LossTerm | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """``epochs`` passes over ``data`` in minibatches shuffled by ``rng``, one ``optimizer`` step
    each, minimising the model's loss plus ``loss_term(params, params at the start)``. With
    ``data.weight`` the loss is the minibatch mean of ``weight * loss``, the importance-weighted
    empirical risk (IWeS, Citovsky et al., ICLR 2023, the weighted objective of Algorithm 1).

    Returns each epoch's mean minibatch loss (the model's loss, without ``loss_term``).
    ``on_step(step)`` runs after every optimizer step (1, 2, ...), e.g. to collect SGD iterates.
    """
    params = list(model.module.parameters())
    start = [param.detach().clone() for param in params] if loss_term is not None else []
    model.module.train()
    epoch_losses, steps = [], 0
    for _ in range(epochs):
        total, batches = torch.zeros((), device=model.device), 0
        for xb, yb, wb in data.batches(batch_size, rng):
            output = model.module(xb)
            # importance-weighted empirical risk: the minibatch mean of weight * loss
            loss = (
                model.loss(output, yb)
                if wb is None
                else (model.loss(output, yb, reduction="none") * wb).mean()
            )
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
    """``epochs`` passes of minibatch SGD (:class:`SGD`); returns the mean minibatch loss."""
    optimizer = SGD(model.module.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
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
