"""What one job of a sweep holds while it runs: its reservation.

A protocol declares the actors and tasks it places at once, per role (``cluster.<role>``
resources), and how many Ray Train workers it trains on. The sweep launcher turns that into one
Ray placement group per job (one bundle per actor or task that asks for resources, reserved
whole before the job starts: gang scheduling) and, inside the job, sizes every group of actors
from the same counts (:func:`sim.runtime.workers.job_share`). Ray Train reserves its workers in
a placement group of its own (Ray Train V2 does not nest in another one), so the launcher counts
them in its ledger beside the bundles (:meth:`Reservation.total`): the jobs in flight never ask
together for more than the cluster has.

Pure functions of the config: the launcher computes every job's reservation before the sweep
starts, and refuses a job that no cluster of these nodes could ever hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.runtime.config import ROLES, ClusterConfig, ResourceSpec

Resources = dict[str, float]
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray's marker resource of the head node


def resources_of(spec: ResourceSpec) -> Resources:
    """The Ray resources of one actor of ``spec`` (only those it asks for)."""
    found = {"CPU": spec.num_cpus, "GPU": spec.num_gpus, **spec.resources}
    return {name: float(amount) for name, amount in found.items() if amount}


def add(*amounts: Mapping[str, float]) -> Resources:
    """The sum of resource dicts."""
    total: Resources = {}
    for amount in amounts:
        for name, value in amount.items():
            total[name] = total.get(name, 0.0) + value
    return total


def fits(want: Mapping[str, float], have: Mapping[str, float]) -> bool:
    return all(have.get(name, 0.0) + 1e-9 >= value for name, value in want.items())


@dataclass(frozen=True)
class Reservation:
    """``counts``: role -> actors or tasks of that role the job places at once (a bundle each,
    of ``cluster.<role>`` resources, plus ``pinned[role]``); ``trained``: its Ray Train workers
    (``cluster.worker`` resources each); ``share``: role -> the group size the job's protocol
    may start (default: ``counts``, and at least ``trained`` workers)."""

    counts: Mapping[str, int]
    trained: int = 0
    pinned: Mapping[str, Resources] = field(default_factory=dict)
    share: Mapping[str, int] | None = None

    def bundles(self, cluster: ClusterConfig) -> list[Resources]:
        """One placement-group bundle per actor or task that asks for any resource."""
        found = []
        for role, count in self.counts.items():
            bundle = add(resources_of(getattr(cluster, role)), self.pinned.get(role, {}))
            if bundle:
                found += [bundle] * count
        return found

    def trained_resources(self, cluster: ClusterConfig) -> list[Resources]:
        """The bundles Ray Train reserves on its own, one per training worker."""
        return [resources_of(cluster.worker)] * self.trained

    def total(self, cluster: ClusterConfig) -> Resources:
        """Everything the job holds at once: its bundles and its Ray Train workers."""
        return add(*self.bundles(cluster), *self.trained_resources(cluster))

    def group_sizes(self) -> dict[str, int]:
        """What :func:`sim.runtime.workers.group_size` may start per role inside the job."""
        share = dict(self.counts if self.share is None else self.share)
        if self.trained:
            share["worker"] = max(share.get("worker", 0), self.trained)
        return share


def reservation_of(protocol: Any, cluster: ClusterConfig, workers: int) -> Reservation:
    """The protocol's own reservation (its ``reservation(cluster, workers)``), or, for a
    protocol that declares none, one actor of each of its roles and ``workers`` workers."""
    declared = getattr(protocol, "reservation", None)
    if declared is not None:
        return declared(cluster, workers)
    roles = getattr(protocol, "roles", ROLES)
    return Reservation({role: workers if role == "worker" else 1 for role in roles})


def worker_share(capacity: int | None, in_flight: int) -> int:
    """Each job's workers when ``in_flight`` jobs share a cluster that holds ``capacity``
    workers (None: workers ask for no resources): an even split, at least one."""
    if capacity is None:
        return 1
    return max(1, capacity // max(1, in_flight))


def capacity(total: Mapping[str, float], spec: ResourceSpec) -> int | None:
    """How many actors of ``spec`` ``total`` resources hold (None: it asks for none)."""
    want = resources_of(spec)
    if not want:
        return None
    return min(math.floor(total.get(name, 0.0) / value + 1e-9) for name, value in want.items())


def why_never(
    bundles: Sequence[Mapping[str, float]],
    trained: Sequence[Mapping[str, float]],
    nodes: Sequence[Mapping[str, float]],
) -> str | None:
    """Why no cluster of these ``nodes`` (each node's total resources) could hold the job, or
    None if an empty one could: every bundle must fit some node, and the job the cluster."""
    for bundle in (*bundles, *trained):
        if not any(fits(bundle, node) for node in nodes):
            return f"no node can hold its bundle {dict(bundle)}"
    need, have = add(*bundles, *trained), add(*nodes)
    if not fits(need, have):
        short = {k: v for k, v in need.items() if have.get(k, 0.0) + 1e-9 < v}
        held = {k: have.get(k, 0.0) for k in short}
        return f"it needs {short} at once and the cluster has {held}"
    return None
