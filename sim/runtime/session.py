"""Ray's lifetime for one run: an embedded local Ray, or a connection to a cluster."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import ray
from ray._private import ray_constants

from sim.errors import CohortError, ConfigError
from sim.runtime.config import ClusterConfig

# Loggers of Ray's own actors, and the level below which they are silenced: Ray Train's
# placement-group cleaner warns every second that the state API (which needs the dashboard, off
# by default here) does not answer.
QUIET_LOGGERS = {
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
}
WORKER_SETUP = {"worker_process_setup_hook": "sim.runtime.session.quiet_worker_logs"}


def quiet_worker_logs() -> None:
    """Run in every Ray worker process at start: apply :data:`QUIET_LOGGERS`."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def _check_reachable(address: str, timeout_s: float) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"cluster.address: expected host:port (got {address!r})")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as error:
        raise CohortError(
            f"cluster.address: no Ray cluster answers at {address} ({error}); start one with "
            "`ray start --head` or use cluster=local"
        ) from None


def remote_address(cluster: ClusterConfig) -> str:
    """The address of a remote cluster, checked to answer (fails fast, before any output)."""
    address = cluster.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError("cluster.address: cluster=remote needs an address (or RAY_ADDRESS)")
    _check_reachable(address, cluster.connect_timeout_s)
    return address


@contextmanager
def _loopback_node_ip() -> Iterator[None]:
    """Let ``ray.init(_node_ip_address="127.0.0.1")`` keep the loopback address.

    ``ray.init`` replaces a loopback node IP with this host's routable one
    (``services.resolve_ip_for_localhost``) unless clusters are disabled, which Ray reads from
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` at import into ``ray_constants.ENABLE_RAY_CLUSTER``.
    With the node IP 127.0.0.1 the GCS, raylet, workers and agents bind to loopback only.
    """
    enabled = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled


def start_local_ray(num_cpus: int | None, num_gpus: int | None, dashboard: bool) -> None:
    """An embedded Ray on loopback only, never joining a running cluster (``RAY_ADDRESS`` or the
    one last started with ``ray start`` are ignored)."""
    with _loopback_node_ip():
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            num_gpus=num_gpus,
            include_dashboard=dashboard,
            _node_ip_address="127.0.0.1",
            logging_level=logging.WARNING,
            runtime_env=WORKER_SETUP,
        )


def join_cluster(address: str) -> None:
    """Connect to the Ray cluster at ``address``. A loopback address is kept as it is (Ray would
    turn it into this host's routable IP, where a cluster bound to loopback does not answer).

    Ray sends a cluster token only in ``RAY_AUTH_MODE=token``, never by default to an explicit
    address, while ``ray start`` turns token authentication on by default: say so on failure.
    """
    host = address.removeprefix("ray://").rpartition(":")[0]
    loopback = host in ("127.0.0.1", "localhost")
    try:
        with _loopback_node_ip() if loopback else nullcontext():
            ray.init(address=address, logging_level=logging.WARNING, runtime_env=WORKER_SETUP)
    except ConnectionError as error:
        hint = ""
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            hint = (
                "; if the cluster uses token authentication (`ray start` turns it on), run with "
                "RAY_AUTH_MODE=token and its token in ~/.ray/auth_token or $RAY_AUTH_TOKEN"
            )
        raise CohortError(f"cluster.address: cannot join {address}: {error}{hint}") from None


def start_ray(cluster: ClusterConfig) -> None:
    """Start an embedded Ray (local) or join the cluster at ``cluster.address`` (remote)."""
    if cluster.mode == "local":
        start_local_ray(cluster.num_cpus, cluster.num_gpus, cluster.dashboard)
    else:
        join_cluster(remote_address(cluster))


@contextmanager
def ray_session(cluster: ClusterConfig) -> Iterator[None]:
    """Start (local) or join (remote) Ray for one job; shut down or disconnect at the end.

    If Ray is already initialised in this process (a test session, a notebook), use it as is and
    leave it running.
    """
    if ray.is_initialized():
        yield
        return
    start_ray(cluster)
    try:
        yield
    finally:
        ray.shutdown()
