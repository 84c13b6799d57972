"""BADGE: batch active learning by diverse gradient embeddings.

Ash, Zhang, Krishnamurthy, Langford & Agarwal, "Deep Batch Active Learning by Diverse, Uncertain
Gradient Lower Bounds", ICLR 2020 (arXiv 1906.03671), Algorithm 1. Each unlabeled point's
gradient embedding is the gradient of the cross-entropy at its predicted label
``yhat = argmax_y p_y`` with respect to the last layer's weights,

    g(x) = (p(x) - e_yhat) (outer) h(x),

(``h``: penultimate activations), and the batch is chosen by k-means++ seeding on ``g``: the
first point has the largest ``||g||`` (as in the authors' code), each next one is drawn with
probability proportional to its squared distance to the nearest chosen point.

``g`` is never materialised: ``<g_i, g_j> = <a_i, a_j> <h_i, h_j>`` with ``a = p - e_yhat``, so
a distance costs O(classes + width) instead of O(classes * width).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.interfaces.active import LearnerOutputs


def gradient_factors(probabilities: np.ndarray, embeddings: np.ndarray):
    """``(a, h)`` with ``g = a (outer) h``: ``a = p - onehot(argmax p)``, ``h`` the embedding."""
    a = probabilities.astype(np.float64).copy()
    a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0
    return a, embeddings.astype(np.float64)


def gradient_embeddings(probabilities: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """The explicit (n, classes * width) gradient embeddings (for tests and small pools)."""
    a, h = gradient_factors(probabilities, embeddings)
    return (a[:, :, None] * h[:, None, :]).reshape(len(a), -1)


def kmeans_plus_plus(a: np.ndarray, h: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on the rows ``g_i = a_i (outer) h_i``; returns ``k`` row indices."""
    if k > len(a):
        raise ValueError(f"batch of {k} asked from {len(a)} points")
    norms = (a**2).sum(axis=1) * (h**2).sum(axis=1)  # ||g_i||^2
    chosen = [int(np.argmax(norms))]
    nearest = np.full(len(a), np.inf)
    for _ in range(k - 1):
        j = chosen[-1]
        d2 = norms + norms[j] - 2.0 * (a @ a[j]) * (h @ h[j])
        nearest = np.minimum(nearest, np.maximum(d2, 0.0))
        nearest[chosen] = 0.0
        total = nearest.sum()
        if total > 0:
            pick = int(rng.choice(len(a), p=nearest / total))
        else:  # every point coincides with a centre: any unchosen one will do
            pick = int(rng.choice(np.setdiff1d(np.arange(len(a)), chosen)))
        chosen.append(pick)
    return np.asarray(chosen)


@dataclass
class Badge:
    """k-means++ seeding on the gradient embeddings of the unlabeled points."""

    def select(
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        candidates = np.flatnonzero(~labeled)
        a, h = gradient_factors(outputs.probabilities[candidates], outputs.embeddings[candidates])
        return candidates[kmeans_plus_plus(a, h, batch_size, rng)]
