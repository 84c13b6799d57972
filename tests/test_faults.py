"""Faults on one machine: a client worker killed mid-round, an oracle killed between requests.
(A driver killed with SIGKILL: tests/test_resume.py; a node removed: tests/test_cluster.py.)"""

import json
import os
import time

import numpy as np
import pytest
import ray

import sim
from envs.tabular import Tabular
from sim.errors import CohortError
from sim.protocols.active.oracle import LabelingError, Oracle, OracleDesk
from sim.runtime.workers import WorkerGroup

COMMON = [
    "protocol.rounds=4",
    "protocol.eval_every=2",
    "progress=false",
    "protocol.clients_per_round=20",
]
VOLATILE = {"round_time_s", "worker_restarts"}


def kill(worker) -> None:
    """Kill ``worker`` by its handle, never to restart, and wait until Ray reports it dead and its
    process is gone (Ray may list it dead while the process still runs a call sent to it)."""
    pid = ray._private.state.actors(worker._actor_id.hex())["Pid"]
    ray.kill(worker, no_restart=True)
    deadline = time.monotonic() + 30
    while ray._private.state.actors(worker._actor_id.hex())["State"] != "DEAD" or os.path.exists(
        f"/proc/{pid}"
    ):
        assert time.monotonic() < deadline, "the killed worker did not die"
        time.sleep(0.01)


def kill_at(monkeypatch, calls: dict[str, int]) -> list[str]:
    """Make the pool kill a worker right after handing it the ``calls[method]``-th call of
    ``method`` (counted from 1): that call, queued or running, and the worker's later calls of
    the same batch are lost. Returns the methods killed at."""
    submit = WorkerGroup._submit
    counts = dict.fromkeys(calls, 0)
    kills: list[str] = []

    def submit_then_kill(self, k, method, args, num_returns):
        worker, refs = submit(self, k, method, args, num_returns)
        if method in calls:
            counts[method] += 1
            if counts[method] == calls[method]:
                kill(worker)
                kills.append(method)
        return worker, refs

    monkeypatch.setattr(WorkerGroup, "_submit", submit_then_kill)
    return kills


@ray.remote(num_cpus=0)
class Doubler:
    def placement(self) -> tuple[str, str]:
        return ray.get_runtime_context().get_node_id(), "cpu"

    def double(self, x: int) -> int:
        return 2 * x

    def crash(self) -> None:
        os._exit(1)


@pytest.mark.parametrize("capacity", [None, 1])
def test_the_pool_reruns_the_calls_of_a_dead_worker(ray_session, monkeypatch, capacity):
    pool = WorkerGroup(Doubler.remote, 2, lambda: capacity)
    kills = kill_at(monkeypatch, {"double": 2})  # worker 1 dies; its call 3 is lost
    assert pool.run("double", [(x,) for x in range(5)]) == [(2 * x,) for x in range(5)]
    assert kills == ["double"] and pool.restarts == 1
    assert pool.size == (2 if capacity is None else 1)  # replaced, or no room: the other one
    node = ray.get_runtime_context().get_node_id()
    assert pool.placements == [(node, "cpu")] * (3 if capacity is None else 2)
    assert pool.summary() == {"worker_nodes": 1, "worker_devices": ["cpu"]}


def test_the_pool_gives_up_on_a_call_whose_worker_always_dies(ray_session):
    # The call itself ends its worker's process, every time: a bug, not a fault. (Killing the
    # worker from outside just before the call raced with the process's exit under load: the
    # call could still run on a worker that Ray already listed as dead.)
    pool = WorkerGroup(Doubler.remote, 1, lambda: None)
    with pytest.raises(CohortError, match="failed 4 times"):
        pool.run("crash", [()])
    assert pool.restarts == 3  # replaced after deaths 1-3; the 4th gives up


def test_a_worker_killed_mid_round_changes_nothing(ray_session, tmp_path, monkeypatch):
    clean = sim.run([*COMMON, f"output_dir={tmp_path / 'clean'}"])
    assert sum(r["worker_restarts"] for r in clean.history) == 0
    # 4 tasks a round on 2 workers: the 5th is round 2's first (the tasks are spread by cost, so
    # which worker gets which later task depends on the clients' sizes).
    # The first evaluation (round 2) has one test block, on worker 0, which then gets the first
    # block of clients.
    kills = kill_at(monkeypatch, {"run": 5, "evaluate_test": 1})
    faulty = sim.run([*COMMON, f"output_dir={tmp_path / 'faulty'}"])
    assert kills == ["run", "evaluate_test"]
    assert [r["worker_restarts"] for r in faulty.history] == [0, 2, 0, 0]
    np.testing.assert_array_equal(faulty.params, clean.params)
    summary = json.loads((faulty.output_dir / "summary.json").read_text())
    assert summary["worker_nodes"] == 1 and summary["worker_devices"] == ["cpu"]
    strip = lambda h: [{k: v for k, v in r.items() if k not in VOLATILE} for r in h]  # noqa: E731
    assert strip(faulty.history) == strip(clean.history)


def test_a_killed_oracle_comes_back_with_its_revealed_set(ray_session):
    env = Tabular(dataset="iris")

    def make_oracle(i: int):
        return Oracle.options(num_cpus=0).remote(env, 0, i, 0.0)

    oracle = make_oracle(0)
    pool_size, _ = ray.get(oracle.describe.remote())
    desk = OracleDesk([oracle], make_oracle, pool_size, budget=10, cost_per_label=1.0)
    first = desk.label(np.array([3, 1, 4]))
    kill(desk.oracles[0])
    second = desk.label(np.array([5, 9]))  # asked of the dead oracle: restarted, then answered
    assert desk.restarts == 1 and desk.oracles[0] is not oracle
    assert desk.spent == 5 and desk.cost == 5.0
    np.testing.assert_array_equal(ray.get(desk.oracles[0].revealed.remote()), [1, 3, 4, 5, 9])
    with pytest.raises(LabelingError, match="already labeled"):
        desk.label(np.array([4]))
    with pytest.raises(ray.exceptions.RayTaskError, match="already labeled"):
        ray.get(desk.oracles[0].label.remote(np.array([4])))  # the new actor itself refuses
    fresh = make_oracle(0)  # the same answers as the first oracle gave
    np.testing.assert_array_equal(
        ray.get(fresh.label.remote(np.array([3, 1, 4, 5, 9]))), [*first, *second]
    )
    assert len(desk.label(np.array([0, 2, 6, 7, 8]))) == 5  # the rest of the budget
    with pytest.raises(LabelingError, match="budget"):
        desk.label(np.array([10]))


def test_a_tasks_lines_reach_the_caller_while_it_runs(ray_session, tmp_path, monkeypatch):
    """``logged`` in a streaming task, ``follow`` in the caller: each line is printed while the
    task still runs (the task waits for the caller to have printed its first line), in order,
    then the value comes; an exception in the work is the task's error; ``show=False``: quiet."""
    from sim.runtime import workers

    seen, printed = tmp_path / "seen", []

    def caller_print(line, flush=False):
        printed.append(line)
        seen.touch()

    monkeypatch.setattr(workers, "print", caller_print, raising=False)

    @ray.remote(num_returns="streaming")
    def task(fail: bool, seen):
        def work(log):
            log("step 1")
            waited = time.monotonic()
            while not seen.exists():
                if time.monotonic() - waited > 60:
                    raise TimeoutError("the caller had not printed step 1 while the task ran")
                time.sleep(0.05)
            log("step 2")
            if fail:
                raise ValueError("broken at step 3")
            return {"value": 42}

        yield from workers.logged(work)

    assert workers.follow(task.remote(False, seen)) == {"value": 42}
    assert printed == ["step 1", "step 2"]
    seen.unlink()
    with pytest.raises(ValueError, match="broken at step 3"):
        workers.follow(task.remote(True, seen))
    assert printed == ["step 1", "step 2"] * 2
    seen.touch()  # the quiet caller prints nothing: the task must not wait for it
    assert workers.follow(task.remote(False, seen), show=False) == {"value": 42}
    assert printed == ["step 1", "step 2"] * 2
