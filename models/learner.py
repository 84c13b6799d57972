"""The pool learners of ``learner=mlp`` and ``learner=ensemble``: MLPs trained on labelled rows
(active learning, covering, retraining). Pure torch, imported by the functions that train the
model: a driver builds and checks the learner's config without it. What a trained learner exposes
of a pool is :func:`sim.training.learner.expose`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from sim import checks

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

    models: ClassVar[int] = 1

    width: int = 128
    depth: int = 2
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warm_start: bool = False
    dropout: float = 0.0  # after each hidden layer, in training (and MC dropout: BALD)

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "width", "depth", "epochs", "batch_size")
        checks.positive(self, "lr")
        checks.at_least(self, 0, "weight_decay")
        checks.in_interval(self, 0, 1, "dropout")

    def build(self, num_features: int, num_classes: int) -> nn.Module:
        """The module that :meth:`fit` trains and the flat parameters fill."""
        return self.network(num_features, num_classes)

    def network(self, num_features: int, num_classes: int) -> nn.Sequential:
        """One MLP."""
        from torch import nn

        layers: list[nn.Module] = []
        width_in = num_features
        for _ in range(self.depth):
            layers += [nn.Linear(width_in, self.width), nn.ReLU()]
            layers += [nn.Dropout(self.dropout)] if self.dropout > 0 else []
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
        weights: np.ndarray | None = None,
    ) -> tuple[ClientModel, float]:
        """Train on ``(x, y)``; returns the model and the mean minibatch loss of the last epoch.
        ``y``: class labels (n,), or (n, classes) target weights (soft cross-entropy);
        ``weights``: (n,) importance weights of the examples' losses, or None (all 1)."""
        import torch

        from sim.training.model import ClientData, ClientModel, initial_params
        from sim.training.sgd import AdamW, train_epochs

        build = lambda: self.network(x.shape[1], num_classes)  # noqa: E731
        model = ClientModel(build(), device)
        model.set_flat(init if init is not None else initial_params(build, torch_seed))
        data = ClientData(
            torch.tensor(x, device=model.device),
            torch.tensor(
                y, dtype=torch.int64 if y.ndim == 1 else torch.float32, device=model.device
            ),
            None
            if weights is None
            else torch.tensor(weights, dtype=torch.float32, device=model.device),
        )
        optimizer = AdamW(model.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            torch.manual_seed(torch_seed)  # dropout's masks: from the run's seed, not the process's
            losses = train_epochs(
                model, data, optimizer, epochs=self.epochs, batch_size=self.batch_size, rng=rng
            )
        return model, losses[-1]


@dataclass
class EnsembleLearner(MLPLearner):
    """``size`` MLPs (the fields of :class:`MLPLearner`), each from its own initialisation and
    shuffles, trained on the same (weighted) examples: the learner of several models that
    disagreement selectors need (IWeS, Citovsky et al., ICLR 2023, Section 3: two models from
    different initialisations). Its outputs are the members' mean probabilities, the first
    member's embeddings, and every member's probabilities; an ensemble of one is the MLP."""

    size: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.at_least(self, 1, "size")

    @property
    def models(self) -> int:  # type: ignore[override]
        return self.size

    def build(self, num_features: int, num_classes: int) -> nn.Module:
        from sim.training.model import Ensemble

        return Ensemble([self.network(num_features, num_classes) for _ in range(self.size)])

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        num_classes: int,
        rng: np.random.Generator,
        torch_seed: int,
        init: np.ndarray | None = None,
        device: torch.device | str = "cpu",
        weights: np.ndarray | None = None,
    ) -> tuple[ClientModel, float]:
        """Fit each member (member 0 from ``torch_seed`` and ``rng``, member i from seeds derived
        from them); returns the ensemble and its members' mean last-epoch loss."""
        from sim.training.model import ClientModel, Ensemble

        shuffles = [rng, *rng.spawn(self.size - 1)]  # spawning leaves rng's own stream as it is
        inits = [None] * self.size if init is None else np.split(init, self.size)
        members, losses = [], []
        for i in range(self.size):
            seed = torch_seed if i == 0 else member_seed(torch_seed, i)
            model, loss = super().fit(
                x, y, num_classes, shuffles[i], seed, inits[i], device, weights
            )
            members.append(model.module)
            losses.append(loss)
        return ClientModel(Ensemble(members), device), float(np.mean(losses))


def member_seed(torch_seed: int, member: int) -> int:
    """Member ``member``'s torch seed in an ensemble whose first member uses ``torch_seed``."""
    return int(np.random.SeedSequence([torch_seed, member]).generate_state(1)[0])
