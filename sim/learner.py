"""The active-learning learner: an MLP trained on the revealed labels, and what it exposes of the
pool (class probabilities and penultimate-layer embeddings). Pure torch; no Ray here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sim.training import ClientData, ClientModel, initial_params


@dataclass(frozen=True)
class LearnerOutputs:
    """What a selector sees of the learner on (a block of) the pool."""

    probabilities: np.ndarray  # (n, classes) float32, rows sum to 1
    embeddings: np.ndarray  # (n, width) float32: the last hidden layer's activations

    @classmethod
    def concatenate(cls, blocks: list[LearnerOutputs]) -> LearnerOutputs:
        return cls(
            np.concatenate([b.probabilities for b in blocks]),
            np.concatenate([b.embeddings for b in blocks]),
        )

    def __len__(self) -> int:
        return len(self.probabilities)


@dataclass
class MLPLearner:
    """ReLU MLP of ``depth`` hidden layers of ``width`` units, trained with AdamW on the
    cross-entropy of the revealed labels for ``epochs`` epochs of ``batch_size`` minibatches.

    Retrained from a fresh initialisation every round unless ``warm_start`` (then it continues
    from the previous round's parameters).
    """

    width: int = 128
    depth: int = 2
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warm_start: bool = False

    def __post_init__(self) -> None:
        for name in ("width", "depth", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1 (got {getattr(self, name)})")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(
                f"lr: must be > 0 and weight_decay >= 0 (got {self.lr}, {self.weight_decay})"
            )

    def build(self, num_features: int, num_classes: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        width_in = num_features
        for _ in range(self.depth):
            layers += [nn.Linear(width_in, self.width), nn.ReLU()]
            width_in = self.width
        layers.append(nn.Linear(width_in, num_classes))
        return nn.Sequential(*layers)

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        num_classes: int,
        rng: np.random.Generator,
        torch_seed: int,
        init: np.ndarray | None = None,
        device: torch.device | str = "cpu",
    ) -> tuple[ClientModel, float]:
        """Train on ``(x, y)``; returns the model and the mean minibatch loss of the last epoch."""
        build = lambda: self.build(x.shape[1], num_classes)  # noqa: E731
        model = ClientModel(build(), device)
        model.set_flat(init if init is not None else initial_params(build, torch_seed))
        data = ClientData(
            torch.tensor(x, device=model.device),
            torch.tensor(y, dtype=torch.int64, device=model.device),
        )
        optimizer = torch.optim.AdamW(
            model.module.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        model.module.train()
        loss_sum, steps = 0.0, 0
        for epoch in range(self.epochs):
            last = epoch == self.epochs - 1
            for xb, yb in data.batches(self.batch_size, rng):
                loss = F.cross_entropy(model.module(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if last:
                    loss_sum, steps = loss_sum + float(loss.detach()), steps + 1
        return model, loss_sum / max(steps, 1)


@torch.no_grad()
def expose(model: ClientModel, x: np.ndarray, block: int = 8192) -> LearnerOutputs:
    """Class probabilities and penultimate embeddings of ``model`` (a Sequential) on ``x``."""
    model.module.eval()
    body, head = model.module[:-1], model.module[-1]
    probabilities, embeddings = [], []
    for start in range(0, len(x), block):
        hidden = body(torch.tensor(x[start : start + block], device=model.device))
        probabilities.append(F.softmax(head(hidden), dim=1).cpu().numpy())
        embeddings.append(hidden.cpu().numpy())
    width = head.in_features
    if not probabilities:
        return LearnerOutputs(
            np.zeros((0, head.out_features), np.float32), np.zeros((0, width), np.float32)
        )
    return LearnerOutputs(np.concatenate(probabilities), np.concatenate(embeddings))


@torch.no_grad()
def accuracy(model: ClientModel, x: np.ndarray, y: np.ndarray, block: int = 8192) -> float:
    """Fraction of ``(x, y)`` that ``model`` classifies correctly."""
    model.module.eval()
    hits = 0
    for start in range(0, len(y), block):
        output = model.module(torch.tensor(x[start : start + block], device=model.device))
        hits += int((output.argmax(1).cpu() == torch.tensor(y[start : start + block])).sum())
    return hits / len(y) if len(y) else float("nan")
