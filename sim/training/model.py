"""Models whose parameters travel as one flat vector, a client's data as tensors, and evaluation.
Shared by the algorithms and the protocols; pure torch, no Ray here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def half_squared_error(output: torch.Tensor, target: torch.Tensor, reduction: str = "mean"):
    """``1/2 (f(x) - y)^2`` for a scalar regression output of shape (n, 1) or (n,)."""
    losses = 0.5 * (output.reshape(target.shape) - target) ** 2
    return losses.mean() if reduction == "mean" else losses


LOSSES = {"classification": F.cross_entropy, "regression": half_squared_error}


class ClientModel:
    """A torch module with its task's loss, whose parameters are read and written as one flat
    float32 vector."""

    def __init__(
        self, module: nn.Module, device: torch.device | str = "cpu", task: str = "classification"
    ) -> None:
        if task not in LOSSES:
            raise ValueError(f"task: must be one of {tuple(LOSSES)} (got {task!r})")
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self.task = task
        self.loss = LOSSES[task]
        self.num_params = sum(p.numel() for p in self.module.parameters())

    def set_flat(self, flat: np.ndarray) -> None:
        if flat.shape != (self.num_params,):
            raise ValueError(f"expected {self.num_params} parameters, got shape {flat.shape}")
        vector = torch.tensor(flat, dtype=torch.float32, device=self.device)  # a copy: never alias
        with torch.no_grad():
            for param in self.module.parameters():
                param.copy_(vector[: param.numel()].view_as(param))
                vector = vector[param.numel() :]

    def get_flat(self) -> np.ndarray:
        vector = torch.nn.utils.parameters_to_vector(self.module.parameters())
        return vector.detach().cpu().numpy().copy()


def layout(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """Each parameter's name and shape, in the order of the flat vector
    (:meth:`ClientModel.get_flat`)."""
    return [(name, tuple(param.shape)) for name, param in module.named_parameters()]


def initial_params(build: Callable[[], nn.Module], seed: int) -> np.ndarray:
    """Flat parameters of ``build()`` initialised from ``seed``; torch's global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ClientModel(build()).get_flat()


class Ensemble(nn.Module):
    """Several classifiers as one module (one flat parameter vector, member after member);
    its output is the log of their mean class probabilities, so the cross-entropy and the
    accuracy of :func:`per_example_eval` are the ensemble's."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logs = torch.stack([F.log_softmax(member(x), dim=1) for member in self.members])
        return torch.logsumexp(logs, dim=0) - np.log(len(self.members))


@dataclass(frozen=True)
class ClientData:
    """One client's examples as tensors on the worker's device; ``weight`` (n,), if given, is
    each example's importance weight in the loss (see :func:`sim.training.sgd.train_epochs`)."""

    x: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor | None = None

    @classmethod
    def gather(
        cls, x: np.ndarray, y: np.ndarray, indices: np.ndarray, device: torch.device
    ) -> ClientData:
        return cls(torch.from_numpy(x[indices]).to(device), torch.from_numpy(y[indices]).to(device))

    def __len__(self) -> int:
        return len(self.y)

    def batches(
        self, batch_size: int, rng: np.random.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """One epoch of shuffled minibatches ``(x, y, weight or None)``; the last may be
        smaller."""
        permutation = torch.from_numpy(rng.permutation(len(self))).to(self.x.device)
        for start in range(0, len(self), batch_size):
            take = permutation[start : start + batch_size]
            yield self.x[take], self.y[take], None if self.weight is None else self.weight[take]


@torch.no_grad()
def per_example_eval(
    model: ClientModel, x: np.ndarray, y: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example loss and correctness (all false for regression) of ``model`` on ``(x, y)``,
    in batches of ``batch_size``: 256 keeps a CNN's activations in cache (0.71 ms an image
    here, against 1.01 ms in batches of 4096)."""
    model.module.eval()
    losses, correct = [], []
    for start in range(0, len(y), batch_size):
        xb = torch.tensor(x[start : start + batch_size], device=model.device)
        yb = torch.tensor(y[start : start + batch_size], device=model.device)
        output = model.module(xb)
        losses.append(model.loss(output, yb, reduction="none").cpu().numpy())
        hits = output.argmax(1) == yb if model.task == "classification" else torch.zeros_like(yb)
        correct.append(hits.bool().cpu().numpy())
    if not losses:
        return np.zeros(0), np.zeros(0, bool)
    return np.concatenate(losses), np.concatenate(correct)


def accuracy(model: ClientModel, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``(x, y)`` that ``model`` classifies correctly (NaN when empty)."""
    _, correct = per_example_eval(model, x, y)
    return float(correct.mean()) if len(correct) else float("nan")
