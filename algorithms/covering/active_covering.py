"""Active covering: label-query every positive of an unlabeled pool with the fewest queries.

Jiang & Rostamizadeh, "Active Covering", ICML 2021 (arXiv 2106.02552). Four query strategies,
each a :class:`~sim.interfaces.covering.CoveringAlgorithm` whose ``start`` returns a coverer
that answers ``next(k)`` (the next ``k`` pool indices to ask) and learns from ``observe``:

- :class:`OfflineCover`: the classical support estimator (the paper's offline learner, Sec. 3):
  label a uniform sample ``X_0`` of ``explore`` points, then query every point inside the balls
  ``B(p, r_k(p))`` around the sample's positives, ``r_k(p)`` the distance from ``p`` to its
  ``k``-th nearest neighbour in ``X_0``. It does not adapt after the sample; so that every run
  ends with all positives found (and the excess cost is defined), it then keeps growing the balls:
  points are queried in increasing ``min_p ||x - p|| / r_k(p)`` (<= 1 is the estimator's set).
- :class:`ExploreCommit`: the paper's active explore-then-commit (Sec. 4): ``explore`` uniform
  queries, then repeatedly the unlabeled point nearest to any positive found so far.
- :class:`RandomCover`: uniform order (the passive baseline).
- :class:`ClassifierCover`: after the same exploration, a classifier trained on all labels so
  far ranks the unlabeled points; the ``retrain_every`` most likely positives are queried, then
  it is retrained (a baseline of the paper's kind; its settings are ours).

The offline and active learners need only the positive labels. When the uniform exploration
finds no positive, every strategy keeps sampling uniformly until it finds one. The exploration
has ``explore`` points, or ``ceil(n^explore_power)`` when that is set (the theory's schedules grow
with the pool's size ``n``). ``explore``, ``explore_power`` and ``k`` are config fields; their
defaults are ours, not the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim import checks, seeding
from sim.interfaces.active import lowest_unlabeled

NEAREST_BLOCK = 8192  # pool rows per block of the batched distance computation


def squared_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x, dtype=np.float64)


def nearest_distances(
    x: np.ndarray, x_norms: np.ndarray, centres: np.ndarray, scale: np.ndarray | None = None
) -> np.ndarray:
    """``min_j ||x_i - c_j|| / scale_j`` for every row of ``x`` (``scale`` 1 when None), in
    blocks of rows by one matrix product each (``||x||^2 + ||c||^2 - 2 x.c``), O(n m d)."""
    out = np.full(len(x), np.inf)
    if len(centres) == 0:
        return out
    c = np.asarray(centres, np.float64)
    c_norms = squared_norms(c)
    for lo in range(0, len(x), NEAREST_BLOCK):
        block = np.asarray(x[lo : lo + NEAREST_BLOCK], np.float64)
        squared = x_norms[lo : lo + NEAREST_BLOCK, None] + c_norms[None, :] - 2 * block @ c.T
        distances = np.sqrt(np.maximum(squared, 0.0))
        if scale is not None:
            distances = distances / scale[None, :]
        out[lo : lo + len(block)] = distances.min(axis=1)
    return out


def knn_radii(sample: np.ndarray, centres: np.ndarray, k: int) -> np.ndarray:
    """``r_k(c)``: the distance from each centre (a member of ``sample``) to its ``k``-th nearest
    neighbour in ``sample``, itself and its duplicates excluded (distance 0 would make an empty
    ball); ``k`` beyond the sample's other points takes the farthest; 1 when there is none."""
    squared = squared_norms(centres)[:, None] + squared_norms(sample)[None, :]
    squared -= 2 * np.asarray(centres, np.float64) @ np.asarray(sample, np.float64).T
    distances = np.sort(np.sqrt(np.maximum(squared, 0.0)), axis=1)
    radii = np.ones(len(centres))
    for i, row in enumerate(distances):
        others = row[row > 1e-9 * max(1.0, row[-1])]
        if len(others):
            radii[i] = others[min(k, len(others)) - 1]
    return radii


def smallest_unqueried(score: np.ndarray, queried: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` (at most: the unqueried count) unqueried indices of smallest ``score``,
    smallest first, equal scores by index: so a smaller ``k`` gives a prefix of a larger's."""
    return lowest_unlabeled(score, queried, min(k, int((~queried).sum())))


def exploration_size(explore: int, power: float | None, n: int) -> int:
    """``explore``, or ``ceil(n^power)`` when ``power`` is set; at most ``n``."""
    return min(n, explore if power is None else int(np.ceil(n**power)))


class Coverer:
    """The state every strategy shares: the pool, what was queried and found, and a uniform
    exploration order drawn once from the run's seed."""

    def __init__(self, x: np.ndarray, seed: int, explore: int) -> None:
        self.x = np.ascontiguousarray(x, np.float64)  # once: distances are taken in float64
        self.x_norms = squared_norms(self.x)
        self.queried = np.zeros(len(x), bool)
        self.positive = np.zeros(len(x), bool)
        self.order = seeding.rng(seed, "covering_explore").permutation(len(x))
        self.explore = explore
        self.seed = seed

    @property
    def exploring(self) -> bool:
        """Still in the uniform phase: fewer than ``explore`` queries, or no positive yet."""
        return int(self.queried.sum()) < self.explore or not self.positive.any()

    def uniform(self, k: int) -> np.ndarray:
        """The next ``k`` unqueried points of the exploration order."""
        pending = self.order[~self.queried[self.order]]
        return pending[:k]

    def next(self, k: int) -> np.ndarray:
        """The next ``k`` distinct unqueried indices; fewer at the end of the exploration, of a
        classifier's ranking, or of the pool."""
        if self.exploring:
            left = self.explore - int(self.queried.sum())
            return self.uniform(min(k, left) if left > 0 else k)
        return self.commit(k)

    def commit(self, k: int) -> np.ndarray:
        raise NotImplementedError

    def observe(self, indices: np.ndarray, positive: np.ndarray) -> None:
        self.queried[indices] = True
        self.positive[indices[np.asarray(positive, bool)]] = True


class UniformCoverer(Coverer):
    def commit(self, k: int) -> np.ndarray:
        return self.uniform(k)


@dataclass
class RandomCover:
    """Uniform order: the passive baseline (expected excess cost grows linearly in n)."""

    def start(self, x: np.ndarray, seed: int) -> Coverer:
        return UniformCoverer(x, seed, explore=len(x))


class NearestCoverer(Coverer):
    """Queries in increasing (scaled) distance to a set of positive centres."""

    def __init__(self, x: np.ndarray, seed: int, explore: int, adaptive: bool, k: int) -> None:
        super().__init__(x, seed, explore)
        self.adaptive, self.k = adaptive, k
        self.score: np.ndarray | None = None

    def commit(self, k: int) -> np.ndarray:
        if self.score is None:  # the first commit: centres are the positives found so far
            centres = np.flatnonzero(self.positive)
            scale = None
            if not self.adaptive:
                sample = np.flatnonzero(self.queried)
                scale = knn_radii(self.x[sample], self.x[centres], self.k)
            self.score = nearest_distances(self.x, self.x_norms, self.x[centres], scale)
        return smallest_unqueried(self.score, self.queried, k)

    def observe(self, indices: np.ndarray, positive: np.ndarray) -> None:
        super().observe(indices, positive)
        if self.adaptive and self.score is not None:
            found = indices[np.asarray(positive, bool)]
            if len(found):
                nearer = nearest_distances(self.x, self.x_norms, self.x[found])
                np.minimum(self.score, nearer, out=self.score)


@dataclass
class ExploreCommit:
    """Active explore-then-commit (Jiang & Rostamizadeh 2021, Algorithm 2): ``explore`` uniform
    queries, then the unlabeled point nearest to the positives found so far, one after another.
    Excess query cost O~(n^{(D-1)/D})."""

    explore: int = 100
    explore_power: float | None = None

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "explore")
        if self.explore_power is not None:
            checks.in_interval(self, 0, 1, "explore_power", closed=True)

    def start(self, x: np.ndarray, seed: int) -> Coverer:
        explore = exploration_size(self.explore, self.explore_power, len(x))
        return NearestCoverer(x, seed, explore, adaptive=True, k=1)


@dataclass
class OfflineCover:
    """The offline support estimator (Jiang & Rostamizadeh 2021, Algorithm 1): a uniform sample
    of ``explore`` points, then every point within the ``k``-NN radius of a sampled positive (the
    balls grown further if positives remain). Excess query cost Theta~(n^{D/(D+1)})."""

    explore: int = 100
    explore_power: float | None = None
    k: int = 5

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "explore", "k")
        if self.explore_power is not None:
            checks.in_interval(self, 0, 1, "explore_power", closed=True)

    def start(self, x: np.ndarray, seed: int) -> Coverer:
        explore = exploration_size(self.explore, self.explore_power, len(x))
        return NearestCoverer(x, seed, explore, adaptive=False, k=self.k)


class ClassifierCoverer(Coverer):
    def __init__(self, x: np.ndarray, seed: int, settings: ClassifierCover) -> None:
        super().__init__(x, seed, exploration_size(settings.explore, None, len(x)))
        self.settings = settings
        self.ranked = np.zeros(0, np.int64)
        self.retrains = 0

    @property
    def exploring(self) -> bool:  # a classifier needs a negative as well as a positive
        labeled = self.queried.sum()
        return super().exploring or int(self.positive.sum()) == int(labeled)

    def commit(self, k: int) -> np.ndarray:
        pending = self.ranked[~self.queried[self.ranked]]
        if len(pending) == 0:
            pending = self.retrain()
            self.ranked = pending
        return pending[:k]

    def retrain(self) -> np.ndarray:
        """Fit the classifier on every label so far; rank the unlabeled by P(positive)."""
        import torch

        from models.learner import MLPLearner  # torch: only when asked
        from sim.training.learner import expose

        torch.set_num_threads(1)  # the same numbers whatever the worker's CPUs (resume replays)
        s = self.settings
        learner = MLPLearner(s.width, s.depth, s.epochs, s.batch_size, s.lr)
        labeled = np.flatnonzero(self.queried)
        self.retrains += 1
        model, _ = learner.fit(
            self.x[labeled].astype(np.float32),
            self.positive[labeled].astype(np.int64),
            2,
            seeding.rng(self.seed, "covering_classifier", self.retrains),
            seeding.torch_seed(self.seed, "covering_classifier_init", self.retrains),
        )
        unlabeled = np.flatnonzero(~self.queried)
        p_positive = expose(model, self.x[unlabeled].astype(np.float32)).probabilities[:, 1]
        top = smallest_unqueried(-p_positive, np.zeros(len(unlabeled), bool), s.retrain_every)
        return unlabeled[top]


@dataclass
class ClassifierCover:
    """Classifier-guided: after ``explore`` uniform queries, an MLP (``width`` x ``depth``,
    ``epochs`` of AdamW at ``lr`` in minibatches of ``batch_size``) trained on all labels so far
    ranks the unlabeled points; the ``retrain_every`` most likely positives are queried, then it
    is retrained from scratch."""

    explore: int = 100
    retrain_every: int = 200
    width: int = 64
    depth: int = 1
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3

    def __post_init__(self) -> None:
        checks.at_least(
            self, 1, "explore", "retrain_every", "width", "depth", "epochs", "batch_size"
        )
        checks.positive(self, "lr")

    def start(self, x: np.ndarray, seed: int) -> Coverer:
        return ClassifierCoverer(x, seed, self)
