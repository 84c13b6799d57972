"""What a pool learner's trained model exposes of a pool: class probabilities and penultimate-
layer embeddings (active learning, covering, retraining). The learners themselves are
:mod:`models.learner`. Pure torch; no Ray here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from sim.interfaces.active import LearnerOutputs

if TYPE_CHECKING:
    from sim.training.model import ClientModel


def expose(
    model: ClientModel,
    x: np.ndarray,
    block: int = 8192,
    mc_samples: int = 0,
    rng: np.random.Generator | None = None,
) -> LearnerOutputs:
    """Class probabilities and penultimate embeddings of ``model`` (a Sequential, or an
    :class:`~sim.training.model.Ensemble` of them: see :class:`LearnerOutputs`) on ``x``; with
    ``mc_samples``, also that many MC-dropout samples of the (first) network's probabilities,
    their masks drawn from ``rng`` (:func:`mc_dropout_probabilities`)."""
    import torch
    import torch.nn.functional as F

    from sim.training.model import Ensemble

    model.module.eval()
    nets = list(model.module.members) if isinstance(model.module, Ensemble) else [model.module]
    head = nets[0][-1]
    members, embeddings, samples = [], [], []
    with torch.no_grad():
        for start in range(0, len(x), block):
            xb = torch.tensor(x[start : start + block], device=model.device)
            hidden = [net[:-1](xb) for net in nets]
            probs = [F.softmax(net[-1](h), dim=1) for net, h in zip(nets, hidden, strict=True)]
            members.append(torch.stack(probs, dim=1).cpu().numpy())
            embeddings.append(hidden[0].cpu().numpy())
            if mc_samples:
                samples.append(mc_dropout_probabilities(nets[0], xb, mc_samples, rng))
    if not members:
        members = [np.zeros((0, len(nets), head.out_features), np.float32)]
        embeddings = [np.zeros((0, head.in_features), np.float32)]
        samples = [np.zeros((0, mc_samples, head.out_features), np.float32)] if mc_samples else []
    per_model = np.concatenate(members)
    return LearnerOutputs(
        np.ascontiguousarray(per_model[:, 0]) if len(nets) == 1 else per_model.mean(axis=1),
        np.concatenate(embeddings),
        per_model if len(nets) > 1 else None,
        np.concatenate(samples) if samples else None,
    )


def mc_dropout_probabilities(
    net: Any, x: Any, samples: int, rng: np.random.Generator | None
) -> np.ndarray:
    """``(n, samples, classes)``: ``net``'s softmax on ``x`` with every ``Dropout`` layer active,
    a fresh mask per sample, row and unit (kept with probability ``1 - p``, kept units scaled by
    ``1 / (1 - p)``, as in training), drawn from ``rng`` so that the samples follow from the
    run's seed (MC dropout: Gal & Ghahramani, ICML 2016)."""
    import torch
    import torch.nn.functional as F

    if rng is None:
        raise ValueError("mc_dropout_probabilities: MC-dropout masks need an rng")
    drawn = []
    for _ in range(samples):
        h = x
        for layer in net:
            if isinstance(layer, torch.nn.Dropout):
                keep = torch.from_numpy(rng.random(tuple(h.shape)) >= layer.p).to(h.device)
                h = h * keep / (1 - layer.p)
            else:
                h = layer(h)
        drawn.append(F.softmax(h, dim=1))
    return torch.stack(drawn, dim=1).cpu().numpy()


def learner_layout(learner: Any, pool: Any) -> list[tuple[str, tuple[int, ...]]]:
    """The names and shapes of ``learner``'s parameters on ``pool`` (its features and classes)."""
    from sim.training.model import layout

    return layout(learner.build(pool.x.shape[1], pool.num_classes))
