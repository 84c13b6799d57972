"""The pool learner: an MLP trained on labelled rows (active learning, covering, retraining),
and what it exposes of a pool (class probabilities and penultimate-layer embeddings). Pure
torch, imported by the functions that train or run the model: a driver builds and checks the
learner's config without it. No Ray here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim import checks
from sim.interfaces.active import LearnerOutputs

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sim.training.model import ClientModel


@dataclass
class MLPLearner:
    """ReLU MLP of ``depth`` hidden layers of ``width`` units, trained with AdamW
    (:class:`sim.training.sgd.AdamW`) on the
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
        checks.at_least(self, 1, "width", "depth", "epochs", "batch_size")
        checks.positive(self, "lr")
        checks.at_least(self, 0, "weight_decay")

    def build(self, num_features: int, num_classes: int) -> nn.Sequential:
        from torch import nn

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
        """Train on ``(x, y)``; returns the model and the mean minibatch loss of the last epoch.
        ``y``: class labels (n,), or (n, classes) target weights (soft cross-entropy)."""
        import torch

        from sim.training.model import ClientData, ClientModel, initial_params
        from sim.training.sgd import AdamW, train_epochs

        build = lambda: self.build(x.shape[1], num_classes)  # noqa: E731
        model = ClientModel(build(), device)
        model.set_flat(init if init is not None else initial_params(build, torch_seed))
        data = ClientData(
            torch.tensor(x, device=model.device),
            torch.tensor(
                y, dtype=torch.int64 if y.ndim == 1 else torch.float32, device=model.device
            ),
        )
        optimizer = AdamW(model.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        losses = train_epochs(
            model, data, optimizer, epochs=self.epochs, batch_size=self.batch_size, rng=rng
        )
        return model, losses[-1]


def expose(model: ClientModel, x: np.ndarray, block: int = 8192) -> LearnerOutputs:
    """Class probabilities and penultimate embeddings of ``model`` (a Sequential) on ``x``."""
    import torch
    import torch.nn.functional as F

    model.module.eval()
    body, head = model.module[:-1], model.module[-1]
    probabilities, embeddings = [], []
    with torch.no_grad():
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
