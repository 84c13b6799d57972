"""Cluster mode for real: a three-node Ray cluster on this machine (``ray.cluster_utils.Cluster``:
a head and two worker nodes of one CPU each, on loopback), driven by ``python -m sim
cluster=remote`` in subprocesses, as a user's driver would connect to a cluster.

The cluster lives in a private temp dir (``RAY_TMPDIR``), so that a ``ray.init()`` elsewhere on
the machine never mistakes it for the latest local cluster. The test process's own Ray (the
``ray_session`` fixture) is shut down first; that fixture starts it again for later tests.
"""

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

import sim
from tests.conftest import run_cli, start_cli, wait_for_rounds

pytestmark = pytest.mark.multinode

NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1"}
# 15 clients a round in tasks of 5: 3 workers of one CPU, one per node.
RUN = [
    "protocol.rounds=10",
    "protocol.eval_every=5",
    "protocol.clients_per_round=15",
    "progress=false",
]


@pytest.fixture(scope="module")
def local_sha(tmp_path_factory) -> str:
    """The parameters' digest of RUN on a local Ray (run before the cluster starts)."""
    result = sim.run([*RUN, f"output_dir={tmp_path_factory.mktemp('local') / 'run'}"])
    return json.loads((result.output_dir / "summary.json").read_text())["params_sha256"]


@pytest.fixture(scope="module")
def cluster(local_sha):
    ray.shutdown()  # the test process's own Ray, if any: one Ray at a time on this machine
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths are limited
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", temp)
        cluster = Cluster(initialize_head=True, head_node_args=NODE)
        for _ in range(2):
            cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        yield cluster
        cluster.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def live_nodes(cluster: Cluster) -> int:
    return len(cluster.global_state._live_node_ids())


def remote(cluster: Cluster) -> list[str]:
    return ["cluster=remote", f"cluster.address={cluster.address}"]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_remote_runs_share_the_cluster_spread_their_workers_and_match_the_local_run(
    cluster, local_sha, tmp_path
):
    """A two-job sweep whose jobs each connect to the running cluster and disconnect."""
    assert cluster.address.startswith("127.0.0.1:")
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", *RUN, *remote(cluster), "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [summary(sweep / str(job)) for job in (0, 1)]
    assert [job["config"]["seed"] for job in jobs] == [0, 1]
    assert [job["worker_nodes"] for job in jobs] == [3, 3]
    assert jobs[0]["params_sha256"] == local_sha  # seed 0 is RUN
    assert jobs[1]["params_sha256"] != local_sha
    assert live_nodes(cluster) == 3 and cluster.remaining_processes_alive()


def test_a_run_survives_the_loss_of_a_worker_node(cluster, local_sha, tmp_path):
    run_dir = tmp_path / "run"
    metrics = run_dir / "metrics.jsonl"
    proc = start_cli(*RUN, *remote(cluster), f"hydra.run.dir={run_dir}")
    started = wait_for_rounds(proc, metrics, 2, timeout=240)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert started >= 2, "the run did not get going"
    cluster.remove_node(next(iter(cluster.worker_nodes)))
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    history = [json.loads(line) for line in metrics.read_text().splitlines()]
    lost_at = [r["round"] for r in history if r["worker_restarts"]]
    assert len(lost_at) == 1 and lost_at[0] < len(history), f"worker lost at {lost_at}"
    assert summary(run_dir)["params_sha256"] == local_sha


def test_a_sweep_side_by_side_spreads_over_the_nodes_and_retries_a_job_lost_with_its_node(
    cluster, tmp_path
):
    """Three identical jobs (``name`` changes no number) on the launcher: one job per node of
    one CPU; the node of a job's own process is removed while it runs; that job is retried from
    its checkpoint on the nodes left and ends with the others' numbers."""
    while live_nodes(cluster) < 3:  # a node an earlier test removed
        cluster.add_node(**NODE)
        cluster.wait_for_nodes()
    sweep = tmp_path / "sweep"
    long_run = [*RUN, "protocol.rounds=80", "protocol.checkpoint_every=5"]
    proc = start_cli(
        "-m", "hydra/launcher=cohort", *long_run, *remote(cluster), "name=a,b,c",
        f"hydra.sweep.dir={sweep}",
    )  # fmt: skip

    def header(job: int) -> list[str]:  # [job K] pid P on node N (IP): overrides
        log = sweep / str(job) / "log.txt"
        return log.read_text().split() if log.exists() else []

    def going() -> bool:
        return all(len(header(job)) > 6 and rounds(sweep / str(job)) >= 3 for job in range(3))

    deadline = time.monotonic() + 240
    while not going() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert going(), proc.stderr.read()[-3000:] if proc.poll() is not None else "no start"
    nodes = {job: header(job)[6] for job in range(3)}
    assert len(set(nodes.values())) == 3, nodes  # one job per node
    by_id = {node.node_id: node for node in cluster.worker_nodes}
    lost = next(job for job, node in nodes.items() if node in by_id)
    cluster.remove_node(by_id[nodes[lost]])
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    record = {job["job"]: job for job in json.loads((sweep / "sweep.json").read_text())["jobs"]}
    assert [record[job]["status"] for job in range(3)] == ["done"] * 3
    assert record[lost]["attempts"] == 2 and "infrastructure fault" in stderr
    shas = {summary(sweep / str(job))["params_sha256"] for job in range(3)}
    assert len(shas) == 1
    assert live_nodes(cluster) == 2


def rounds(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def test_balance_is_longest_processing_time_first():
    from sim.runtime.workers import balance

    # largest first (ties: lower index): 7 -> 0; 5 -> 1; 4 -> 1 (5 < 7); 3 (item 0) -> 0 (7 < 9);
    # 3 (item 4) -> 1 (9 < 10)
    assert balance([3, 7, 4, 5, 3], 2) == [0, 0, 1, 1, 1]
    assert balance([1.0, 1.0, 1.0], 3) == [0, 1, 2]
    assert balance([], 2) == []
