"""Split a labelled training set among clients; every function returns ``(order, offsets)``.

``order`` lists the example indices grouped by client and ``offsets`` (``num_clients + 1``
entries) delimits each client's slice, as in :class:`sim.data.FederatedData`.
"""

from __future__ import annotations

import numpy as np


def _check_population(num_examples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients: must be >= 1 (got {num_clients})")
    if num_clients > num_examples:
        raise ValueError(
            f"num_clients: more clients than examples ({num_examples}) (got {num_clients})"
        )


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: must be a 1-D integer array (got {labels.dtype}{labels.shape})")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels: must be >= 0 (got {labels.min()})")
    return labels.astype(np.int64, copy=False)


def shuffled_argsort(keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices that sort ``keys``, in random order among equal keys."""
    perm = rng.permutation(len(keys))
    return perm[np.argsort(keys[perm], kind="stable")]


def group_by_client(
    client_of: np.ndarray, num_clients: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(order, offsets)`` from each example's owner; examples are shuffled within a client."""
    sizes = np.bincount(client_of, minlength=num_clients)
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    return shuffled_argsort(client_of, rng).astype(np.int64), offsets


def iid_partition(
    num_examples: int, num_clients: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random split into clients whose sizes differ by at most one."""
    _check_population(num_examples, num_clients)
    offsets = np.arange(num_clients + 1, dtype=np.int64) * num_examples // num_clients
    return rng.permutation(num_examples).astype(np.int64), offsets


def dirichlet_counts(
    class_sizes: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """``(num_classes, num_clients)`` counts: each class is split with ~Dirichlet(alpha) shares."""
    shares = rng.dirichlet(np.full(num_clients, alpha), size=len(class_sizes))
    cuts = np.floor(np.cumsum(shares, axis=1) * class_sizes[:, None]).astype(np.int64)
    cuts[:, -1] = class_sizes  # the cumulative shares may fall short of 1 by rounding
    return np.diff(cuts, axis=1, prepend=0)


def dirichlet_partition(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 10,
    max_draws: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Label-skewed split: each class is divided among clients in ~Dirichlet(alpha) proportions.

    Hsu, Qi & Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated
    Visual Classification", arXiv:1909.06335 (2019). As is standard practice (Yurochkin et al.,
    ICML 2019; Li et al., NIID-Bench, ICDE 2022, ``min_require_size = 10``), the proportions are
    redrawn until every client holds at least ``min_size`` examples, at most ``max_draws`` times.
    """
    labels = _check_labels(labels)
    _check_population(len(labels), num_clients)
    if alpha <= 0:
        raise ValueError(f"alpha: must be > 0 (got {alpha})")
    if min_size < 0 or min_size * num_clients > len(labels):
        raise ValueError(
            f"min_size: must be >= 0 and at most {len(labels)} // num_clients (got {min_size})"
        )
    if max_draws < 1:
        raise ValueError(f"max_draws: must be >= 1 (got {max_draws})")
    class_sizes = np.bincount(labels)
    for _ in range(max_draws):
        counts = dirichlet_counts(class_sizes, num_clients, alpha, rng)
        if counts.sum(axis=0).min() >= min_size:
            break
    else:
        raise ValueError(
            f"min_size: no Dirichlet(alpha={alpha}) partition in {max_draws} draws gave each of "
            f"{num_clients} clients >= {min_size} examples; use fewer clients, more data, "
            f"a larger alpha or a smaller min_size (got {min_size})"
        )
    client_of = np.empty(len(labels), dtype=np.int64)
    owners = np.tile(np.arange(num_clients), len(class_sizes))
    client_of[shuffled_argsort(labels, rng)] = np.repeat(owners, counts.ravel())
    return group_by_client(client_of, num_clients, rng)


def shard_partition(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pathological non-IID split of McMahan et al., "Communication-Efficient Learning of Deep
    Networks from Decentralized Data", AISTATS 2017, Sec. 3: sort by label, cut into
    ``num_clients * shards_per_client`` contiguous shards (sizes differ by at most one) and give
    each client ``shards_per_client`` shards at random.
    """
    labels = _check_labels(labels)
    _check_population(len(labels), num_clients)
    if shards_per_client < 1:
        raise ValueError(f"shards_per_client: must be >= 1 (got {shards_per_client})")
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise ValueError(
            f"shards_per_client: {num_shards} shards exceed the {len(labels)} examples "
            f"(got {shards_per_client})"
        )
    shard_of_rank = np.arange(len(labels), dtype=np.int64) * num_shards // len(labels)
    client_of_shard = rng.permutation(num_shards) // shards_per_client
    client_of = np.empty(len(labels), dtype=np.int64)
    client_of[shuffled_argsort(labels, rng)] = client_of_shard[shard_of_rank]
    return group_by_client(client_of, num_clients, rng)


def label_histogram(
    labels: np.ndarray, order: np.ndarray, offsets: np.ndarray, num_classes: int
) -> np.ndarray:
    """``(num_clients, num_classes)`` example counts per client and label."""
    num_clients = len(offsets) - 1
    owner = np.repeat(np.arange(num_clients), np.diff(offsets))
    cells = owner * num_classes + np.asarray(labels)[order]
    return np.bincount(cells, minlength=num_clients * num_classes).reshape(num_clients, num_classes)
