"""Sweeps: Hydra's basic launcher (one job after another) against ``hydra/launcher=cohort`` (jobs
side by side, one placement group each), on the same slices of two presets, in one run.

    python bench/sweep_throughput.py [--slice margin|covering|all] [--no-cluster] [--quick]

- margin: 48 jobs of ``experiment=margin_study`` (iris, wine, sonar and glass x the 6 selectors x
  batch sizes 10 and 20, seed 0);
- covering: 12 jobs of ``experiment=covering`` (satellite, positive class 0, the 4 strategies x
  seeds 0-2).

Every contender is ``python -m sim`` in its own process, measured from start to exit: wall time,
jobs per minute, the CPU seconds of its whole process tree (the driver and every Ray process)
over wall time and cores (utilisation), and the tree's peak PSS (memory shared counted once),
sampled every 0.2 s (``bench/tree_memory.py``). Contenders: ``basic`` (a local Ray of 2 CPUs),
``cohort`` (the same Ray, the launcher), and, unless ``--no-cluster``, ``cohort 3 nodes``: a
``ray.cluster_utils.Cluster`` of three nodes of one CPU each on this machine, started by a child
process of the bench (measured with it: the cluster's start is in the wall time; the sweep's own
wall time is given beside it), the sweep joining it with ``cluster=remote``. Each job's final
parameters must be the same for every contender. Prints the ratios next to the issue's targets
(cohort / basic wall <= 0.6, peak memory <= 1.5; 3 nodes within 1.2x of the 2-CPU wall / 1.5)
and the load average before the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tree_memory import watch

REPO = Path(__file__).resolve().parent.parent
GIB = 2**30
CORES = 2
SLICES = {
    "margin": [
        "experiment=margin_study",
        "env.dataset=iris,wine,sonar,glass",
        "seed=0",
    ],  # 4 datasets x 6 selectors x 2 batch sizes = 48 jobs
    "covering": [
        "experiment=covering",
        "env=satellite",
        "protocol.positive_class=0",
    ],  # 4 strategies x 3 seeds = 12 jobs
}
QUICK = {  # a smoke test of the bench itself (its numbers mean nothing)
    "margin": ["experiment=margin_study", "env.dataset=iris", "algorithm=margin,random",
               "protocol.batch_size=20", "seed=0,1"],
    "covering": ["experiment=covering", "env=satellite", "protocol.positive_class=0",
                 "algorithm=random_cover", "seed=0,1", "protocol.budget=500"],
}  # fmt: skip


@dataclass
class Measured:
    jobs: int
    wall_s: float
    sweep_s: float  # the sweep command's own wall time (a cluster's start left out)
    cpu_s: float
    peak_gib: float
    shas: dict[str, str]  # job folder -> final parameters' SHA-256

    def row(self, name: str) -> str:
        per_minute = self.jobs / self.sweep_s * 60
        use = self.cpu_s / self.wall_s / CORES
        return (
            f"| {name} | {self.jobs} | {self.wall_s:.1f} | {self.sweep_s:.1f} | "
            f"{per_minute:.1f} | {self.cpu_s:.0f} | {use:.2f} | {self.peak_gib:.2f} |"
        )


def sweep_command(overrides: list[str], sweep_dir: Path, launcher: bool) -> list[str]:
    command = [sys.executable, "-m", "sim", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    if launcher:
        return [*command, "hydra/launcher=cohort", "hydra.launcher.progress=false"]
    return [*command, "hydra/launcher=basic"]  # the presets choose the launcher otherwise


def shas(sweep_dir: Path) -> dict[str, str]:
    return {
        path.parent.name: json.loads(path.read_text())["params_sha256"]
        for path in sweep_dir.glob("*/summary.json")
    }


def measure(command: list[str], sweep_dir: Path, log: Path) -> Measured:
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        peak = watch(proc, every=0.2)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    found = shas(sweep_dir)
    timing = sweep_dir / "sweep_wall_s"  # written by the cluster child: the sweep's own time
    sweep_s = float(timing.read_text()) if timing.exists() else wall
    return Measured(len(found), wall, sweep_s, peak.cpu_s, peak.pss_kib * 1024 / GIB, found)


def cluster_child(overrides: list[str], sweep_dir: Path) -> None:
    """Start a three-node cluster of one CPU per node (loopback), run the sweep on it with the
    launcher, write the sweep's own wall time, shut the cluster down."""
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short: Ray's socket paths are limited
    os.environ["RAY_TMPDIR"] = temp
    # What the README asks of `ray start` for a side-by-side sweep (session.side_by_side_config)
    os.environ["RAY_num_workers_soft_limit"] = "2"  # noqa: SIM112 (Ray reads this name)
    os.environ["RAY_gcs_create_placement_group_retry_max_interval_ms"] = "100"  # noqa: SIM112
    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    for _ in range(2):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    try:
        remote = ["cluster=remote", f"cluster.address={cluster.address}"]
        start = time.perf_counter()
        subprocess.run(sweep_command([*overrides, *remote], sweep_dir, True), check=True)
        (sweep_dir / "sweep_wall_s").write_text(f"{time.perf_counter() - start:.3f}")
    finally:
        cluster.shutdown()


def bench(name: str, overrides: list[str], args: argparse.Namespace, tmp: Path) -> None:
    print(f"\n## {name}: {' '.join(overrides)}\n", flush=True)
    results: dict[str, Measured] = {}
    contenders = {
        "basic": lambda d: sweep_command([*overrides, "cluster.num_cpus=2"], d, False),
        "cohort": lambda d: sweep_command([*overrides, "cluster.num_cpus=2"], d, True),
    }
    if not args.no_cluster:
        script = Path(__file__).resolve()
        contenders["cohort 3 nodes"] = lambda d: [
            sys.executable, str(script), "--cluster-child", str(d), "--", *overrides
        ]  # fmt: skip
    for contender, command in contenders.items():
        sweep_dir = tmp / f"{name}-{contender.replace(' ', '-')}"
        results[contender] = measure(command(sweep_dir), sweep_dir, tmp / f"{sweep_dir.name}.log")
        print(f"{contender}: {results[contender].wall_s:.1f} s", flush=True)
    print("| contender | jobs | wall s | sweep s | jobs/min | CPU s | CPU use | peak GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for contender, measured in results.items():
        print(measured.row(contender))
    basic, cohort = results["basic"], results["cohort"]
    for contender, measured in results.items():
        if measured.shas != basic.shas:
            differ = sorted(k for k in basic.shas if measured.shas.get(k) != basic.shas[k])
            raise SystemExit(f"{contender}: other parameters than basic's in jobs {differ}")
    print(f"\nevery job's parameters the same for all {len(results)} contenders")
    print(f"cohort / basic wall: {cohort.wall_s / basic.wall_s:.2f} (target <= 0.6)")
    print(f"cohort / basic peak memory: {cohort.peak_gib / basic.peak_gib:.2f} (target <= 1.5)")
    if "cohort 3 nodes" in results:
        three = results["cohort 3 nodes"]
        print(
            f"3 nodes sweep wall / (2-CPU wall / 1.5): {three.sweep_s / (cohort.wall_s / 1.5):.2f}"
            " (target <= 1.2)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slice", choices=[*SLICES, "all"], default="all")
    parser.add_argument("--no-cluster", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cluster-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.cluster_child is not None:
        cluster_child(args.overrides, args.cluster_child)
        return
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {CORES} cores")
    slices = QUICK if args.quick else SLICES
    chosen = list(slices) if args.slice == "all" else [args.slice]
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        for name in chosen:
            bench(name, slices[name], args, Path(tmp))


if __name__ == "__main__":
    main()
