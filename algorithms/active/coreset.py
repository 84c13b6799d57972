"""Core-set selection by k-center greedy on the learner's penultimate embeddings.

Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
ICLR 2018 (arXiv 1708.00489), Algorithm 1: with centres ``s`` = the labeled points, repeat ``k``
times: ``u = argmax_{i unlabeled} min_{j in s} ||h_i - h_j||``, add ``u`` to ``s``. With no
labeled point, the first centre is drawn at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.interfaces.active import LearnerOutputs

ROW_BLOCK = 16384  # rows per block when computing distances to many centres at once


def squared_distances_to_nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``min_j ||points_i - centres_j||^2`` for every row, in blocks (never n x m at once)."""
    nearest = np.full(len(points), np.inf)
    if len(centres) == 0:
        return nearest
    c = centres.astype(np.float64)
    c_norms = (c**2).sum(axis=1)
    for start in range(0, len(points), ROW_BLOCK):
        x = points[start : start + ROW_BLOCK].astype(np.float64)
        d2 = (x**2).sum(axis=1)[:, None] + c_norms[None, :] - 2.0 * x @ c.T
        nearest[start : start + ROW_BLOCK] = np.maximum(d2.min(axis=1), 0.0)
    return nearest


def k_center_greedy(
    embeddings: np.ndarray, labeled: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """``k`` unlabeled indices chosen by k-center greedy (Sener & Savarese, Alg. 1)."""
    candidates = np.flatnonzero(~labeled)
    if k > len(candidates):
        raise ValueError(f"batch of {k} asked from {len(candidates)} unlabeled points")
    points = embeddings[candidates].astype(np.float64)
    norms = (points**2).sum(axis=1)
    nearest = squared_distances_to_nearest(points, embeddings[labeled])
    chosen: list[int] = []
    for _ in range(k):
        pick = (
            int(rng.integers(len(points))) if np.isinf(nearest).all() else int(np.argmax(nearest))
        )
        chosen.append(pick)
        to_pick = np.maximum(norms + norms[pick] - 2.0 * (points @ points[pick]), 0.0)
        nearest = np.minimum(nearest, to_pick)
        nearest[pick] = -1.0  # never again
    return candidates[np.asarray(chosen)]


@dataclass
class Coreset:
    """k-center greedy on penultimate-layer embeddings."""

    def select(
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        return k_center_greedy(outputs.embeddings, labeled, batch_size, rng)
