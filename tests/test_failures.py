"""Bad input and failure, round two: no hang, no traceback, no mixed or lost runs.

Every refusal is one line (``cohort: error: ...`` and exit status 2 on the command line, a
``CohortError`` from the API) and leaves every file as it was. Tests of a possible hang run
under a deadline, so a regression fails fast instead of hanging the suite.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import ray

import sim
from sim.errors import CohortError
from sim.reporting.report import main as report_main
from sim.runtime import checkpoint
from tests.conftest import REPO, one_line, run_cli

SMALL = ["progress=false", "protocol.rounds=2", "env.max_samples_per_client=60"]
ACTIVE = ["progress=false", "algorithm=margin", "env.dataset=iris", "protocol.budget=40"]


@pytest.fixture
def deadline():
    """``deadline(seconds)``: past it, dump every thread's stack and end the test process (a
    hang fails the suite at once instead of holding it)."""
    yield lambda seconds: faulthandler.dump_traceback_later(seconds, exit=True)
    faulthandler.cancel_dump_traceback_later()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative name -> SHA-256 of its bytes)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def refused(overrides: list[str], folder: Path) -> str:
    """The message of a run the API refuses; ``folder`` (its output dir) is left as it was."""
    before = snapshot(folder) if folder.exists() else None
    with pytest.raises(CohortError) as info:
        sim.run([*overrides, f"output_dir={folder}"])
    assert (snapshot(folder) if folder.exists() else None) == before
    return str(info.value)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-round run (with its checkpoint), and its result."""
    import tests.conftest as conftest

    conftest.ensure_ray()
    folder = tmp_path_factory.mktemp("finished") / "run"
    return folder, sim.run([*SMALL, f"output_dir={folder}"])


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "copy"))


# ---- hangs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,role",
    [
        ([*SMALL, "cluster.server.num_gpus=2"], "server"),
        ([*SMALL, "cluster.worker.num_gpus=2"], "worker"),
        ([*ACTIVE, "cluster.oracle.num_gpus=2"], "oracle"),
        ([*ACTIVE, "cluster.worker.num_gpus=2"], "worker"),
        ([*ACTIVE, "+cluster.worker.resources={foo: 1}"], "worker"),
        (
            ["progress=false", "algorithm=retrain", "env=spam", "cluster.teacher.num_gpus=2"],
            "teacher",
        ),
    ],
)
def test_a_role_no_node_can_hold_fails_before_writing(
    overrides, role, ray_session, tmp_path, deadline
):
    deadline(120)
    message = refused(overrides, tmp_path / "run")
    assert f"cluster.{role}: no node of the cluster can hold one {role}" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["algorithm=distill", "env=letter", "cluster.teacher.num_cpus=2"],  # teacher + worker
        ["algorithm=salt", "cluster.num_workers=1", "cluster.teacher.num_cpus=2"],  # + Ray Train
    ],
    ids=["distill", "salt"],
)
def test_roles_that_fit_one_by_one_but_not_together_fail_before_writing(
    overrides, ray_session, tmp_path, deadline
):
    deadline(120)  # they waited for ever: Ray Train retried its worker group without end
    message = refused(["progress=false", *overrides], tmp_path / "run")
    assert "fit the cluster one by one but not together" in message
    assert "needs {'CPU': 3.0} at once and the cluster has {'CPU': 2.0}" in message
    assert not (tmp_path / "run").exists()


def test_an_actor_whose_resources_stay_taken_fails_after_the_placement_timeout(
    ray_session, tmp_path, deadline
):
    deadline(120)

    @ray.remote(num_cpus=2)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()  # every CPU of the session, taken
    ray.get(holder.ready.remote())
    try:
        message = refused([*SMALL, "cluster.placement_timeout_s=2"], tmp_path / "run")
        assert re.search(
            r"cluster.worker: \d of \d worker actors of .* were not placed and started within 2 s "
            r"\(cluster.placement_timeout_s\); free now: ",
            message,
        ), message
    finally:
        ray.kill(holder)


def test_a_port_that_is_not_a_ray_cluster_fails_within_the_connect_timeout(tmp_path, deadline):
    deadline(120)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []  # accept, never answer
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    port = server.getsockname()[1]
    proc = run_cli("cluster=remote", f"cluster.address=127.0.0.1:{port}",
                   "cluster.connect_timeout_s=1", f"hydra.run.dir={tmp_path / 'run'}",
                   timeout=60)  # fmt: skip
    assert "no Ray cluster answered within 1 s" in one_line(proc)
    assert not (tmp_path / "run").exists()
    for connection in held:
        connection.close()
    server.close()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_a_local_start_whose_ray_processes_are_killed_fails_with_a_message(tmp_path, deadline):
    """As the kernel's OOM killer did: the GCS and raylet die while ``ray.init`` waits for them;
    the start is bounded by ``cluster.start_timeout_s`` (a watchdog prints the error and kills
    the process: Ray's C++ core holds the GIL while it waits)."""
    deadline(150)
    log = tmp_path / "stderr"  # a file, not a pipe: Ray's orphans would hold a pipe open
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sim", "cluster.start_timeout_s=10", f"output_dir={tmp_path}/r"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=handle,
        )  # fmt: skip
    killed, tick = [], time.monotonic()
    while not killed and time.monotonic() - tick < 30:
        for pid in _descendants(proc.pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"gcs_server" in command or b"raylet" in command:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.02)
    assert killed, "Ray's processes were not seen starting"
    proc.wait(timeout=90)
    stderr = log.read_text()
    assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
    assert "cohort: error: cluster: the local Ray did not start within 10 s" in stderr


# ---- mixed or lost runs ---------------------------------------------------------------------


def test_default_folders_are_unique_per_process():
    from hydra import compose, initialize_config_dir

    from sim.runtime.config import CONF_DIR, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", return_hydra_config=True)
    run_dir, sweep_dir = cfg.hydra.run.dir, cfg.hydra.sweep.dir
    assert re.fullmatch(rf"outputs/default/[\d-]+_[\d-]+_{os.getpid()}", run_dir), run_dir
    assert sweep_dir.endswith(f"_{os.getpid()}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        given = compose("config", ["output_dir=/tmp/mine"], return_hydra_config=True)
    assert given.hydra.run.dir == "/tmp/mine"  # Hydra makes no folder of its own beside it


def test_a_folder_is_claimed_by_one_run_at_a_time(tmp_path):
    from sim.runtime.outputs import RunDirectory

    mine = {"protocol": {}, "seed": 0}
    first, second = RunDirectory(tmp_path / "run", False), RunDirectory(tmp_path / "run", False)
    first.prepare(mine, [])  # the folder did not exist: claimed when first written
    with pytest.raises(CohortError, match="is in use by another run"):
        second.prepare({**mine, "seed": 1}, [])
    with pytest.raises(CohortError, match="is in use by another run"):
        RunDirectory(tmp_path / "run", True)  # an existing folder: claimed before it is read
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == mine
    first.release()
    with pytest.raises(CohortError, match="holds a run that stopped before its first checkpoint"):
        second.prepare({**mine, "seed": 1}, [])
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == mine


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """A short run started in the background, and the file its stderr goes to (a pipe could be
    held open by Ray's processes)."""
    log = tmp_path / f"stderr-{len(list(tmp_path.glob('stderr-*')))}"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sim", "protocol.rounds=3", "env.max_samples_per_client=60",
             *args],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=handle,
        )  # fmt: skip
    return proc, log


@pytest.mark.slow
def test_runs_started_together_never_share_a_folder(tmp_path, deadline):
    """Two runs with the default folder started in the same second get one folder each; two runs
    given one folder: one runs, the other is refused, and the folder holds one run."""
    deadline(300)
    shared = tmp_path / "shared"
    procs = [_start(tmp_path), _start(tmp_path)]
    procs += [_start(tmp_path, f"hydra.run.dir={shared}") for _ in range(2)]
    results = [(proc.wait(timeout=240), log.read_text()) for proc, log in procs]
    assert [rc for rc, _ in results[:2]] == [0, 0], results[:2]
    folders = sorted((tmp_path / "outputs" / "default").iterdir())
    assert len(folders) == 2
    files = {"config.json", "metrics.jsonl", "summary.json", "curves.png", "checkpoints"}
    for folder in folders:
        assert {p.name for p in folder.iterdir()} == files  # no .hydra/, no log, no lock left
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 3
    codes = sorted(rc for rc, _ in results[2:])
    assert codes == [0, 2], results[2:]
    loser = next(err for rc, err in results[2:] if rc == 2)
    assert re.search(r"is in use by another run|already holds a run", loser), loser
    assert len((shared / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_refused_rerun_or_resume_changes_nothing(finished, tmp_path):
    folder = copy_of(finished[0], tmp_path)
    assert "already holds a run" in refused(SMALL, folder)
    message = refused([*SMALL, "resume=true", "algorithm.client_lr=0.5"], folder)
    assert "differs from the checkpoint's in ['algorithm.client_lr']" in message
    before = snapshot(folder)  # and on the command line, where Hydra used to write .hydra/
    proc = run_cli(*SMALL, "resume=true", "seed=3", f"hydra.run.dir={folder}")
    assert "differs from the checkpoint's in ['seed']" in one_line(proc)
    assert snapshot(folder) == before


def test_a_folder_holding_other_files_is_not_written(tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": true}')
    (folder / "curves.png").write_bytes(b"not ours")
    assert "is not empty (it holds config.json, curves.png)" in refused(SMALL, folder)


def test_a_run_stopped_before_its_first_checkpoint_restarts_with_resume(finished, tmp_path):
    folder = copy_of(finished[0], tmp_path)
    for name in ("summary.json", "curves.png", "metrics.jsonl"):  # as a run killed before its
        (folder / name).unlink()  # first checkpoint leaves it
    shutil.rmtree(folder / "checkpoints")
    (folder / "checkpoints").mkdir()
    assert "stopped before its first checkpoint: pass resume=true" in refused(SMALL, folder)
    assert "differs" in refused([*SMALL, "resume=true", "seed=1"], folder)
    again = sim.run([*SMALL, "resume=true", f"output_dir={folder}"])
    np.testing.assert_array_equal(again.params, finished[1].params)
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_of_a_finished_run_without_checkpoint_is_refused(finished, tmp_path):
    folder = copy_of(finished[0], tmp_path)
    shutil.rmtree(folder / "checkpoints")
    assert "has finished and left no checkpoint" in refused([*SMALL, "resume=true"], folder)


def _rewrite(path: Path, change) -> None:
    """Rewrite the checkpoint ``path`` with ``change(entries)`` applied to its raw entries."""
    with np.load(path, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    change(entries)
    np.savez(path, **entries)


def _json_entry(value) -> np.ndarray:
    return np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)


DAMAGES = {
    "truncated": (
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "it is not an .npz archive",
    ),
    "not a zip": (lambda p: p.write_bytes(b"garbage" * 100), "it is not an .npz archive"),
    "garbage header": (
        lambda p: _rewrite(p, lambda e: e.update(__meta__=np.frombuffer(b"{oops", np.uint8))),
        "is not valid JSON",
    ),
    "header of the wrong shape": (
        lambda p: _rewrite(p, lambda e: e.update(__meta__=_json_entry([1, 2]))),
        "its header is a list, not an object",
    ),
    "history not records": (
        lambda p: _rewrite(
            p, lambda e: e.update(__meta__=_json_entry({"round": 2, "history": [3], "config": {}}))
        ),
        "history is not a list of records",
    ),
    "parameters of the wrong size": (
        lambda p: _rewrite(p, lambda e: e.update(params=e["params"][:5])),
        "array 'params' has shape (5,)",
    ),
    "parameters changed": (
        lambda p: _rewrite(p, lambda e: e.update(params=e["params"] + 1)),
        "array 'params' does not match its manifest",
    ),
    "object array": (
        lambda p: _rewrite(p, lambda e: e.update(params=np.array([object()], dtype=object))),
        "Object arrays cannot be loaded",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_is_refused_naming_the_file(damage, finished, tmp_path):
    folder = copy_of(finished[0], tmp_path)
    path = folder / "checkpoints" / "checkpoint.npz"
    harm, reason = DAMAGES[damage]
    harm(path)
    message = refused([*SMALL, "protocol.rounds=4", "resume=true"], folder)
    assert f"the checkpoint {path} is damaged" in message and reason in message, message
    assert "nothing was loaded or changed" in message


def test_checkpoint_round_trip_keeps_arrays_and_a_manifest(tmp_path):
    path = tmp_path / "c.npz"
    arrays = {"params": np.arange(4.0), "opt/m": np.ones((2, 3), np.float32)}
    checkpoint.save(path, arrays, {"round": 1})
    loaded, meta = checkpoint.load(path)
    assert meta == {"round": 1} and set(loaded) == set(arrays)
    with zipfile.ZipFile(path) as archive:
        assert "__manifest__.npy" in archive.namelist()


# ---- tracebacks that are now one line -------------------------------------------------------


def test_a_population_without_test_examples_runs_without_test_metrics(ray_session, tmp_path):
    result = sim.run([*SMALL, "env.test_fraction=0", f"output_dir={tmp_path / 'run'}"])
    assert "test_accuracy" not in result.final and 0 <= result.final["client_accuracy_mean"] <= 1


def test_an_explicit_data_dir_is_the_only_place_looked_in(tmp_path):
    message = refused(["env=fashion_mnist", f"env.data_dir={tmp_path / 'none'}"], tmp_path / "r")
    assert f"looked in: {tmp_path / 'none'}." in message


def test_an_output_dir_that_cannot_be_written_is_one_line(tmp_path):
    assert "output_dir: cannot write to /proc/x" in refused(SMALL, Path("/proc/x"))
    (tmp_path / "file").write_text("mine")
    assert "exists and is not a directory" in refused(SMALL, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"
    proc = run_cli("hydra.run.dir=/proc/x", cwd=tmp_path)
    assert "output_dir: cannot write to /proc/x" in one_line(proc)
    proc = run_cli("algorithm.client_lr=-1", f"output_dir={tmp_path / 'new'}", cwd=tmp_path)
    assert "algorithm.client_lr: must be >= 0" in one_line(proc)
    assert not (tmp_path / "new").exists()  # the folder Hydra made for it is gone again
    proc = run_cli("seed=-1", cwd=tmp_path)  # the default folder, outputs/<name>/<time>
    assert "seed: must be >= 0" in one_line(proc)
    assert not (tmp_path / "outputs").exists()  # nor its parents: a refused run changes nothing


def test_report_input_errors_are_one_line(finished, tmp_path, capsys):
    folder = copy_of(finished[0], tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(folder), "--at-rounds", "x", "--out", str(tmp_path / "rep")])
    assert exit_info.value.code == 2
    assert "--at-rounds takes comma-separated whole numbers" in capsys.readouterr().err
    metrics = folder / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + "[1, 2]\n")
    assert report_main([str(folder), "--out", str(tmp_path / "rep")]) == 2
    assert "metrics.jsonl:3: expected a JSON object" in capsys.readouterr().err
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "final": [1]}))
    assert report_main([str(folder), "--out", str(tmp_path / "rep")]) == 2
    assert "its 'final' is not an object" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()


def test_help_names_cohort_and_its_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sim", "--help"], cwd=tmp_path, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0
    assert proc.stdout.startswith("cohort (python -m sim)") and "cohort report DIR" in proc.stdout
    assert "powered by Hydra" not in proc.stdout
    groups = [line.split(":")[0] for line in proc.stdout.splitlines() if ": " in line]
    assert {"algorithm", "logger", "model", "protocol"} <= set(groups)
    assert "schema/" not in proc.stdout  # the options' internal schemas are not choices


def test_ray_train_workers_find_their_own_cluster_when_another_ray_runs(ray_session):
    # Ray Train's placement-group cleaner calls the state API without an address; with two Ray
    # instances on the machine Ray could not tell which (a traceback, the cleaner's thread
    # dead). The worker set-up hook names the worker's own cluster.
    @ray_session.remote(num_cpus=0)
    def address_after_setup() -> tuple[str, str]:
        import os

        from sim.runtime.worker_setup import quiet_worker_logs

        os.environ.pop("RAY_ADDRESS", None)
        quiet_worker_logs()
        return os.environ["RAY_ADDRESS"], ray_session.get_runtime_context().gcs_address

    set_to, own = ray_session.get(address_after_setup.remote())
    assert set_to == own == ray_session.get_runtime_context().gcs_address


def test_ray_train_workers_held_out_by_others_fail_naming_the_role(ray_session, deadline):
    """Ray Train's workers wait for their resources ``cluster.placement_timeout_s``, then the
    run fails in one line naming the role (Ray Train alone would try again for ever)."""
    from sim.protocols.ray_train import RayTrainer
    from sim.runtime.config import ClusterConfig

    @ray_session.remote(num_cpus=2)
    class Holder:  # another run's actors, holding every CPU of the cluster
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    ray_session.get(holder.ready.remote())
    deadline(120)
    try:
        with pytest.raises(CohortError) as refused:
            RayTrainer(ClusterConfig(placement_timeout_s=3), 1, lambda config: None).fit({}, {})
    finally:
        ray_session.kill(holder)
    assert str(refused.value).startswith(
        "cluster.worker: 1 Ray Train workers of {'CPU': 1.0} were not placed and started within "
        "3 s (cluster.placement_timeout_s)"
    )
