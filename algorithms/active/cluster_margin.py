"""Cluster-Margin: margin sampling diversified by a clustering of the pool computed once.

Citovsky, DeSalvo, Gentile, Karydas, Rajagopalan, Rostamizadeh & Kumar, "Batch Active Learning
at Scale", NeurIPS 2021 (arXiv 2107.14263), Algorithm 1. Once, on the first selecting round's
model (trained on the random seed set): embed the pool with the penultimate layer and cluster it
by hierarchical agglomerative clustering (HAC) with average linkage, cut at distance ``epsilon``.
Every round: take the ``k_m`` unlabeled points of smallest margin, group them by cluster, sort
those groups by size (smallest first), and go round-robin over them taking one random point of
each until ``k_t`` are chosen.

Exact average linkage needs the n x n distances: it is used up to ``exact_limit`` points
(scipy). Beyond, a documented two-level scheme keeps memory bounded: k-means (faiss) cuts the
pool into ``micro_clusters`` cells, and exact average linkage runs over the cells, weighted by
their sizes (:func:`average_linkage`), starting from the root-mean-square distance between
two cells' points (:func:`cell_distances`, exact from their centroids and spreads). It is exact
when every cell is one point; its agreement with exact HAC otherwise is measured in
``bench/cluster_margin.py``, cut into a number of clusters and at a distance. A distance cut
differs more: a cell's points merge at height 0 and root-mean-square distances exceed mean ones,
so one ``epsilon`` gives other clusters on either side of ``exact_limit``; a cut into
``clusters`` keeps its meaning, and suits pools beyond ``exact_limit`` better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms.active.margin import margin_scores
from sim import checks
from sim.interfaces.active import LearnerOutputs, lowest_unlabeled


def average_linkage(
    distances: np.ndarray, sizes: np.ndarray | None = None, overwrite: bool = False
) -> np.ndarray:
    """Average-linkage (UPGMA) merges of ``m`` nodes of ``sizes`` points each (1 if None),
    from their (m, m) average distances; rows ``(a, b, height)`` in the order found.

    The nearest-neighbour chain algorithm (Murtagh 1983; Muellner, arXiv 1109.2378, Fig. 3): it
    follows nearest neighbours until two are each other's and merges them; valid because average
    linkage is reducible. A merged node's distances follow Lance-Williams,
    ``d(k, a+b) = (n_a d(k, a) + n_b d(k, b)) / (n_a + n_b)``, which weights every point alike.
    O(m^2) time and memory, each step one O(m) array operation; ``overwrite`` works in
    ``distances`` (float64) instead of a copy. With tied distances it may build another valid
    average-linkage tree than scipy's (ties are broken differently).
    """
    m = len(distances)
    d = distances if overwrite else np.array(distances, dtype=np.float64)  # rows are overwritten
    np.fill_diagonal(d, np.inf)
    size = np.ones(m) if sizes is None else np.asarray(sizes, np.float64).copy()
    active = np.ones(m, bool)
    merges: list[tuple[int, int, float]] = []
    chain: list[int] = []
    while len(merges) < m - 1:
        if not chain:
            chain.append(int(np.argmax(active)))
        a = chain[-1]
        b = int(np.argmin(d[a]))
        if len(chain) > 1 and d[a, chain[-2]] <= d[a, b]:
            b = chain[-2]  # ties go back along the chain, so it always ends
        if len(chain) > 1 and b == chain[-2]:
            del chain[-2:]
            i, j = min(a, b), max(a, b)
            merges.append((i, j, float(d[i, j])))
            row = (size[i] * d[i] + size[j] * d[j]) / (size[i] + size[j])
            d[i], d[:, i] = row, row
            d[i, i] = np.inf
            d[j], d[:, j] = np.inf, np.inf
            size[i] += size[j]
            active[j] = False
        else:
            chain.append(b)
    return np.array(merges, dtype=np.float64).reshape(-1, 3)


def cut(
    merges: np.ndarray, m: int, threshold: float | None = None, clusters: int | None = None
) -> np.ndarray:
    """Flat clusters (labels 0..c-1, :func:`canonical`) of the ``m`` nodes: every merge
    of height <= ``threshold``, or the lowest ``m - clusters`` merges."""
    order = np.argsort(merges[:, 2], kind="stable")
    if threshold is not None:
        take = int(np.searchsorted(merges[order, 2], threshold, side="right"))
    elif clusters is not None:
        take = max(m - clusters, 0)
    else:
        raise ValueError("cut: give a threshold or a number of clusters")
    parent = np.arange(m)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, _ in merges[order[:take]]:
        parent[root(int(b))] = root(int(a))
    return canonical(np.array([root(i) for i in range(m)]))


def canonical(labels: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered 0, 1, ... in the order of each cluster's first member, so that two
    equal partitions have equal labels."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse]


def exact_hac(x: np.ndarray, threshold: float | None = None, clusters: int | None = None):
    """Exact average-linkage HAC of the rows of ``x`` (scipy), cut as in :func:`cut`."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(x) < 2:
        return np.zeros(len(x), np.int64)
    tree = linkage(np.asarray(x, np.float64), method="average")
    if threshold is not None:
        flat = fcluster(tree, threshold, criterion="distance")
    else:
        flat = fcluster(tree, clusters, criterion="maxclust")
    return canonical(flat)


def cell_distances(
    x: np.ndarray, cell: np.ndarray, cells: int, block: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """The cells' sizes and their (cells, cells) root-mean-square point distances:
    ``E||x - y||^2 = ||c_i - c_j||^2 + s_i^2 + s_j^2`` for ``x`` in cell i, ``y`` in cell j,
    centroids ``c`` and mean squared distances to the centroid ``s^2`` (exact). Sums run in
    float64 over blocks of ``block`` rows, so a float32 ``x`` is never copied whole."""
    from scipy import sparse

    sizes = np.bincount(cell, minlength=cells).astype(np.float64)
    sums = np.zeros((cells, x.shape[1]))
    squares = np.zeros(cells)
    for start in range(0, len(x), block):
        rows = np.asarray(x[start : start + block], np.float64)
        ids = cell[start : start + block]
        members = sparse.csr_matrix(
            (np.ones(len(ids)), (ids, np.arange(len(ids)))), (cells, len(ids))
        )
        sums += members @ rows
        squares += np.bincount(ids, weights=(rows**2).sum(axis=1), minlength=cells)
    centroids = sums / sizes[:, None]
    spread = np.maximum(squares / sizes - (centroids**2).sum(axis=1), 0.0)
    squared = (centroids**2).sum(axis=1)
    rms = centroids @ centroids.T  # one (cells, cells) array, filled in place
    rms *= -2.0
    rms += squared[:, None]
    rms += squared[None, :]
    np.maximum(rms, 0.0, out=rms)
    rms += spread[:, None]
    rms += spread[None, :]
    return sizes, np.sqrt(rms, out=rms)


def two_level_hac(
    x: np.ndarray,
    threshold: float | None = None,
    clusters: int | None = None,
    micro_clusters: int = 4096,
    seed: int = 0,
    iterations: int = 10,
) -> np.ndarray:
    """Average-linkage HAC over k-means cells (module docstring): faiss k-means with
    ``micro_clusters`` centroids (seeded by ``seed``), :func:`average_linkage` over the
    non-empty cells weighted by size, then every point takes its cell's cluster. Memory: the
    data, plus O(micro_clusters^2) for the cell distances."""
    import faiss

    x32 = np.ascontiguousarray(x, dtype=np.float32)
    if micro_clusters >= len(x32):
        cell = np.arange(len(x32))
    else:
        kmeans = faiss.Kmeans(
            x32.shape[1],
            micro_clusters,
            niter=iterations,
            seed=seed,
            max_points_per_centroid=256,
            min_points_per_centroid=1,
        )
        kmeans.train(x32)
        cell = kmeans.index.search(x32, 1)[1].ravel()
    used, cell = np.unique(cell, return_inverse=True)  # drop empty cells
    sizes, distances = cell_distances(x32, cell, len(used))
    if clusters is not None and clusters > len(used):
        raise ValueError(
            f"clusters: {clusters} asked from {len(used)} k-means cells; a cell's points always "
            "share a cluster (raise micro_clusters)"
        )
    merges = average_linkage(distances, sizes, overwrite=True)
    return canonical(cut(merges, len(used), threshold, clusters)[cell])


def round_robin(
    candidates: np.ndarray, cluster: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Algorithm 1's sampling: group ``candidates`` by ``cluster`` (their cluster ids), visit
    the groups smallest first (ties by cluster id), and take one random member of each per
    pass until ``k`` are taken (an emptied group drops out). Vectorised: a point's pass is its
    rank in a random order within its group; sort by (pass, group order)."""
    if k > len(candidates):
        raise ValueError(f"round_robin: {k} asked from {len(candidates)} candidates")
    groups, group, counts = np.unique(cluster, return_inverse=True, return_counts=True)
    within = np.lexsort((rng.random(len(candidates)), group))  # by group, random within
    start = np.cumsum(counts) - counts
    rank = np.empty(len(candidates), np.int64)
    rank[within] = np.arange(len(candidates)) - np.repeat(start, counts)
    visit = np.empty(len(groups), np.int64)
    visit[np.lexsort((groups, counts))] = np.arange(len(groups))  # smallest group first
    return candidates[np.lexsort((visit[group], rank))[:k]]


@dataclass
class ClusterMargin:
    """Cluster-Margin (module docstring). The HAC is cut at ``epsilon`` or, if that is None,
    into ``clusters`` clusters; ``margin_factor`` is k_m / k_t (the batch size is k_t; 10 in the
    paper's Open Images runs). Pools of at most ``exact_limit`` points get exact HAC, larger ones
    the two-level scheme with ``micro_clusters`` k-means cells of ``kmeans_iterations`` (then
    ``clusters`` is at most ``micro_clusters``)."""

    epsilon: float | None = None
    clusters: int | None = None
    margin_factor: float = 10.0
    exact_limit: int = 20000
    micro_clusters: int = 4096
    kmeans_iterations: int = 10

    def __post_init__(self) -> None:
        if (self.epsilon is None) == (self.clusters is None):
            raise ValueError("epsilon: set exactly one of epsilon and clusters")
        checks.positive(self, "epsilon", optional=True)
        checks.at_least(self, 1, "clusters", optional=True)
        checks.at_least(self, 1, "margin_factor")
        checks.at_least(self, 2, "exact_limit", "micro_clusters")
        if self.exact_limit > 30000:  # scipy: n^2 / 2 float64 distances; 3.1 GiB at 20,000
            raise ValueError(f"exact_limit: must be <= 30000 (got {self.exact_limit})")
        checks.at_least(self, 1, "kmeans_iterations")
        if self.micro_clusters > 16384:  # two (cells, cells) float64 arrays: 4 GiB at 16,384
            raise ValueError(f"micro_clusters: must be <= 16384 (got {self.micro_clusters})")

    def check_pool(self, pool_size: int) -> None:
        """Refuse, before the run starts, a cut into more clusters than the two-level path has
        k-means cells (pools of more than ``exact_limit`` points: a cell's points share a
        cluster)."""
        if pool_size > self.exact_limit and (self.clusters or 0) > self.micro_clusters:
            raise ValueError(
                f"algorithm.clusters: must be <= micro_clusters {self.micro_clusters} for a pool "
                f"of more than exact_limit {self.exact_limit} points (got {self.clusters}; the "
                f"pool has {pool_size})"
            )

    def cluster(self, embeddings: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Cluster ids of the pool's embeddings: exact HAC, or two-level beyond exact_limit."""
        if len(embeddings) <= self.exact_limit:
            return exact_hac(embeddings, self.epsilon, self.clusters)
        self.check_pool(len(embeddings))
        seed = int(rng.integers(2**31 - 1))
        return two_level_hac(
            embeddings,
            self.epsilon,
            self.clusters,
            self.micro_clusters,
            seed,
            self.kmeans_iterations,
        )

    def initial_state(
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        return {"clusters": self.cluster(outputs.embeddings, rng)}

    def select(
        self,
        outputs: LearnerOutputs,
        labeled: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
        state: dict[str, np.ndarray],
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        k_m = min(int(np.ceil(self.margin_factor * batch_size)), int((~labeled).sum()))
        candidates = lowest_unlabeled(margin_scores(outputs.probabilities), labeled, k_m)
        chosen = round_robin(candidates, state["clusters"][candidates], batch_size, rng)
        return chosen, state
