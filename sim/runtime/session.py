"""Ray's lifetime for one run: an embedded local Ray, or a connection to a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import ray
from ray._private import ray_constants

from sim.errors import CohortError, ConfigError
from sim.runtime.config import ClusterConfig

# The Ray this module is tested with: it reads Ray's private start-up constants and node handle
# and relies on token authentication, which older releases do not have.
RAY_TESTED = (2, 60)


def check_ray_version(version: str = ray.__version__) -> None:
    """Refuse a Ray older than :data:`RAY_TESTED` in one line (pip enforces the same floor; this
    catches an install made with ``--no-deps`` or a cluster's own Ray)."""
    found = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if found < RAY_TESTED:
        wanted = ".".join(map(str, RAY_TESTED))
        raise CohortError(f"ray {version} is older than {wanted}, the release Cohort supports")


WORKER_SETUP = {"worker_process_setup_hook": "sim.runtime.worker_setup.quiet_worker_logs"}
# Ray warns at every local start that it turned on token authentication (its default, kept:
# the token is in ~/.ray/auth_token); the README says so once instead.
TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
# The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the Ray
# Client server) answers with its own SETTINGS frame at once.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _check_reachable(address: str, timeout_s: float) -> None:
    """Fail within about ``timeout_s`` unless a gRPC server (a Ray cluster) answers at
    ``address``: a port that accepts TCP but does not speak HTTP/2 would keep ``ray.init``
    retrying for minutes, deaf to SIGTERM. (With ``RAY_USE_TLS`` the handshake is TLS's: only
    the connection is checked.)"""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"cluster.address: expected host:port (got {address!r})")
    try:
        connection = socket.create_connection((host, int(port)), timeout=timeout_s)
    except OSError as error:
        raise CohortError(
            f"cluster.address: no Ray cluster answers at {address} ({error}); start one with "
            "`ray start --head` or use cluster=local"
        ) from None
    with connection:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        answer = b""
        try:
            connection.sendall(HTTP2_PREFACE)
            while len(answer) < 9:
                chunk = connection.recv(9 - len(answer))
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            raise CohortError(
                f"cluster.address: something accepts connections at {address} but no Ray "
                f"cluster answered within {timeout_s:g} s (cluster.connect_timeout_s)"
            ) from None
        except OSError as error:
            raise CohortError(
                f"cluster.address: {address} dropped the connection ({error})"
            ) from None
    if len(answer) < 9 or answer[3] != 4:  # frame type 4: SETTINGS
        raise CohortError(
            f"cluster.address: the server at {address} is not a Ray cluster (it does not speak "
            "gRPC)"
        )


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


# The watchdog: its subshell sleeps, prints the error and kills the run; the shell itself waits
# for its stdin (a pipe from the run) to close, and then stops the subshell. The pipe closes when
# the run leaves the deadline's block or dies, so the watchdog never outlives the run (its
# orphaned ``sleep`` holds only /dev/null, never the run's stderr).
WATCHDOG = (
    '(sleep "$1" < /dev/null > /dev/null 2>&1 && echo "cohort: error: $2" >&2 && kill -KILL "$3")'
    " & cat > /dev/null; kill $! 2> /dev/null"
)


@contextmanager
def _deadline(seconds: float, message: str) -> Iterator[None]:
    """Bound a call that may block for ever inside Ray's C++ core, which holds the GIL there (so
    no Python thread or signal handler can act): a watchdog process prints ``cohort: error:
    message`` past ``seconds`` and kills this process (status -9/137; the Ray processes it
    started share its fate)."""
    watchdog = subprocess.Popen(
        ["/bin/sh", "-c", WATCHDOG, "deadline", f"{seconds:g}", message, str(os.getpid())],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield
    finally:
        watchdog.stdin.close()
        watchdog.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(watchdog.pid, signal.SIGKILL)  # its orphaned sleep


def start_local_ray(
    num_cpus: int | None,
    num_gpus: int | None,
    dashboard: bool,
    timeout_s: float = 180.0,
    worker_setup: bool = True,
    log_to_driver: bool = True,
    system_config: dict[str, Any] | None = None,
) -> None:
    """An embedded Ray on loopback only, never joining a running cluster (``RAY_ADDRESS`` or the
    one last started with ``ray start`` are ignored). A start that has not finished within
    ``timeout_s`` (its helper processes killed, say by the kernel's OOM killer) ends the
    process with a one-line error."""
    token_logger = logging.getLogger(TOKEN_SETUP_LOGGER)
    level = token_logger.level
    token_logger.setLevel(logging.ERROR)
    message = (
        f"cluster: the local Ray did not start within {timeout_s:g} s (cluster.start_timeout_s); "
        "its processes may have been killed (out of memory?); see /tmp/ray/session_latest/logs"
    )
    try:
        with _loopback_node_ip(), _deadline(timeout_s, message):
            ray.init(
                address="local",
                num_cpus=num_cpus or os.cpu_count(),
                num_gpus=num_gpus,
                include_dashboard=dashboard,
                _node_ip_address="127.0.0.1",
                logging_level=logging.WARNING,
                runtime_env=WORKER_SETUP if worker_setup else None,
                log_to_driver=log_to_driver,
                _system_config=system_config,
            )
    finally:
        token_logger.setLevel(level)


def join_cluster(
    address: str, timeout_s: float = 180.0, worker_setup: bool = True, log_to_driver: bool = True
) -> None:
    """Connect to the Ray cluster at ``address``. A loopback address is kept as it is (Ray would
    turn it into this host's routable IP, where a cluster bound to loopback does not answer).

    Ray sends a cluster token only in ``RAY_AUTH_MODE=token``, never by default to an explicit
    address, while ``ray start`` turns token authentication on by default: say so on failure.
    """
    host = address.removeprefix("ray://").rpartition(":")[0]
    loopback = host in ("127.0.0.1", "localhost")
    try:
        message = f"cluster.address: joining {address} took over {timeout_s:g} s"
        with _loopback_node_ip() if loopback else nullcontext(), _deadline(timeout_s, message):
            ray.init(
                address=address,
                logging_level=logging.WARNING,
                runtime_env=WORKER_SETUP if worker_setup else None,
                log_to_driver=log_to_driver,
            )
    except ConnectionError as error:
        hint = ""
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            hint = (
                "; if the cluster uses token authentication (`ray start` turns it on), run with "
                "RAY_AUTH_MODE=token and its token in ~/.ray/auth_token or $RAY_AUTH_TOKEN"
            )
        raise CohortError(f"cluster.address: cannot join {address}: {error}{hint}") from None


def side_by_side_config(num_cpus: int) -> dict[str, Any]:
    """Ray's settings for a local Ray that runs a sweep's jobs side by side: every job in flight
    holds a worker process of its own (its driver) beside the workers of its tasks, so Ray may
    keep twice as many idle workers as CPUs before it ends some (each restart costs seconds of
    imports); and a placement group waits at most 0.1 s between tries for freed resources (Ray's
    1 s otherwise: the next job's start)."""
    return {
        "num_workers_soft_limit": 2 * num_cpus,
        "gcs_create_placement_group_retry_max_interval_ms": 100,
    }


def start_ray(
    cluster: ClusterConfig, worker_setup: bool = True, side_by_side: bool = False
) -> None:
    """Start an embedded Ray (local) or join the cluster at ``cluster.address`` (remote).

    ``worker_setup``: run :data:`WORKER_SETUP` in every worker process. It is a runtime
    environment, so Ray starts every worker afresh instead of using the ones it started with
    itself: about 1.3 s more before the first actor runs. Only jobs that run Ray Train need it.
    ``side_by_side``: for a sweep's jobs run side by side (``hydra/launcher=cohort``): the
    workers' console output is not printed by this process (each job keeps its own in its
    folder), and a local Ray gets :func:`side_by_side_config`.
    """
    check_ray_version()
    if cluster.mode == "local":
        start_local_ray(
            cluster.num_cpus,
            cluster.num_gpus,
            cluster.dashboard,
            cluster.start_timeout_s,
            worker_setup,
            log_to_driver=not side_by_side,
            system_config=side_by_side_config(cluster.num_cpus or os.cpu_count() or 1)
            if side_by_side
            else None,
        )
    else:
        address = remote_address(cluster)
        join_cluster(address, cluster.start_timeout_s, worker_setup, not side_by_side)


@contextmanager
def ray_session(cluster: ClusterConfig, worker_setup: bool = True) -> Iterator[None]:
    """Start (local) or join (remote) Ray for one job; shut down or disconnect at the end.

    If Ray is already initialised in this process (a test session, a notebook), use it as is and
    leave it running.
    """
    if ray.is_initialized():
        yield
        return
    start_ray(cluster, worker_setup)
    try:
        yield
    finally:
        try:
            if cluster.mode == "local":
                _stop_autoscaler_monitor()
        finally:
            ray.shutdown()


def _stop_autoscaler_monitor() -> None:
    """Kill the local Ray's autoscaler monitor: it ignores SIGTERM, and ``ray.shutdown`` waits
    1 s for it before it kills it (of its 1.2 s). It holds nothing of the run. Ray's node
    object is private: if it changes, nothing is done here and the shutdown waits as before."""
    node = getattr(ray._private.worker, "_global_node", None)
    for info in getattr(node, "all_processes", {}).get(ray_constants.PROCESS_TYPE_MONITOR, []):
        info.process.kill()
