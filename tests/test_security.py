"""The embedded Ray listens on loopback only, and its dashboard is off unless asked."""

import ipaddress
import os
from pathlib import Path

import pytest
import ray

from sim.errors import CohortError
from sim.runtime import session

LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp*


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Socket inode -> (local address, port) of every listening TCP socket on this machine."""
    sockets = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state != LISTEN:
                continue
            hex_address, hex_port = local.split(":")
            raw = bytes.fromhex(hex_address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            sockets[inode] = (str(ipaddress.ip_address(raw)), int(hex_port, 16))
    return sockets


def descendants(roots: set[int]) -> set[int]:
    """``roots`` and every process below them."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process has exited
        parent[int(stat.parent.name)] = int(fields[1])
    found = set(roots)
    while True:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return inodes
    for link in links:
        if link.startswith("socket:["):
            inodes.add(int(link[len("socket:[") : -1]))
    return inodes


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


@ray.remote(num_cpus=0)
class Probe:
    def pid(self) -> int:
        return os.getpid()


def test_is_loopback_reads_the_kernel_tables_right():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.2")
    ports = {port for _, port in listening_sockets().values()}
    assert ports, "this machine listens somewhere (at least the embedded Ray does)"


def executable(pid: int) -> str | None:
    """The file name of a process's executable; None if it ended since it was listed."""
    try:
        return Path(f"/proc/{pid}/exe").resolve(strict=True).name
    except OSError:
        return None


def test_embedded_ray_listens_on_loopback_only(ray_session):
    probe = Probe.remote()  # a worker process, which runs a gRPC server of its own
    worker_pid = ray.get(probe.pid.remote())
    node = ray._private.worker._global_node
    roots = {os.getpid(), worker_pid}
    roots |= {info.process.pid for infos in node.all_processes.values() for info in infos}
    pids = descendants(roots)
    listening = listening_sockets()
    ours = {listening[i] for pid in pids for i in socket_inodes(pid) if i in listening}
    names = {executable(pid) for pid in pids}
    assert {"gcs_server", "raylet"} <= names
    assert len(ours) >= 4, f"expected the GCS, raylet, driver and worker servers: {ours}"
    exposed = sorted(f"{address}:{port}" for address, port in ours if not is_loopback(address))
    assert not exposed, f"Ray listens beyond loopback on {exposed}"
    assert node.node_ip_address == "127.0.0.1"
    ray.kill(probe)


def test_dashboard_is_off_unless_asked(ray_session, monkeypatch):
    node = ray._private.worker._global_node
    assert not node.address_info["webui_url"]
    # Ray still runs its API server process (on loopback, as above) but without the web UI: it
    # does not listen on the dashboard's port.
    (api_server,) = node.all_processes[ray._private.ray_constants.PROCESS_TYPE_DASHBOARD]
    pid = api_server.process.pid
    args = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    assert "--disable-frontend" in args
    (dashboard_port,) = (int(a.removeprefix("--port=")) for a in args if a.startswith("--port="))
    listening = listening_sockets()
    ports = {listening[i][1] for i in socket_inodes(pid) if i in listening}
    assert dashboard_port not in ports
    calls = []
    monkeypatch.setattr(session.ray, "init", lambda **kwargs: calls.append(kwargs))
    session.start_local_ray(num_cpus=1, num_gpus=None, dashboard=False)
    session.start_local_ray(num_cpus=1, num_gpus=None, dashboard=True)
    assert [c["include_dashboard"] for c in calls] == [False, True]
    assert all(c["address"] == "local" and c["_node_ip_address"] == "127.0.0.1" for c in calls)


@pytest.mark.parametrize("mode", ["", "token"])
def test_a_refused_connection_points_to_token_authentication(monkeypatch, mode):
    def refuse(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")

    monkeypatch.setattr(session.ray, "init", refuse)
    monkeypatch.setenv("RAY_AUTH_MODE", mode)
    with pytest.raises(CohortError, match="cannot join 10.0.0.1:6379") as error:
        session.join_cluster("10.0.0.1:6379")
    assert ("RAY_AUTH_MODE=token" in str(error.value)) == (mode != "token")


def test_a_ray_older_than_the_tested_release_is_refused_in_one_line():
    from sim.runtime.session import check_ray_version

    for fine in ("2.60.0", "2.61.1", "3.0.0.dev0", ray.__version__):
        check_ray_version(fine)
    with pytest.raises(CohortError, match=r"^ray 2\.9\.3 is older than 2\.60, the release"):
        check_ray_version("2.9.3")
