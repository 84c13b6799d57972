"""Scaling curve: Cohort's time per round and peak memory against clients per round and
population size, on Synthetic(1,1) with logistic regression and the vectorised engine.

    python bench/fl_scaling.py [--rounds 4] [--out bench_scaling.png]

Two sweeps on one local Ray (2 CPUs, 2 workers): clients per round 10..1,000 on a population of
10,000; population 1,000..100,000 at 1,000 clients per round. Clients have at most
``--max-samples`` examples (the lognormal sizes are unbounded otherwise). Time per round is the
median of rounds 2..R-1 (round 1 warms up, round R evaluates). Peak memory is the machine's memory
in use (MemTotal - MemAvailable, sampled every 0.1 s) above its level before the run: it counts
the driver, the workers and Ray's object store. Writes a two-panel PNG.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import ray
from matplotlib.figure import Figure

import sim


def memory_in_use() -> int:
    """Bytes in use on this machine, from /proc/meminfo."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kib = {name: int(fields[name].split()[0]) for name in ("MemTotal", "MemAvailable")}
    return (kib["MemTotal"] - kib["MemAvailable"]) * 1024


class PeakMemory:
    """Samples :func:`memory_in_use` in a thread; ``peak`` is the maximum above the baseline."""

    def __enter__(self) -> PeakMemory:
        self.baseline, self.peak, self._stop = memory_in_use(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, memory_in_use() - self.baseline)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(population: int, per_round: int, args: argparse.Namespace, tmp: str) -> tuple:
    """(seconds per round, peak GiB) of one vectorised run."""
    overrides = [
        "env.num_clients=" + str(population),
        f"env.max_samples_per_client={args.max_samples}",
        f"protocol.clients_per_round={per_round}",
        f"protocol.clients_per_task={max(1, per_round // 4)}",
        "protocol.client_engine=vectorized",
        "cluster.num_workers=2",
        f"protocol.rounds={args.rounds}",
        f"protocol.eval_every={args.rounds}",
        "protocol.eval_clients=10",
        "protocol.checkpoint_every=0",
        "progress=false",
        f"output_dir={tempfile.mkdtemp(dir=tmp)}",
    ]
    with PeakMemory() as memory:
        result = sim.run(overrides)
    times = [r["round_time_s"] for r in result.history]
    seconds = statistics.median(times[1:-1])
    print(
        f"  population {population:>7}  clients/round {per_round:>5}  "
        f"{seconds:8.3f} s/round  {seconds / per_round * 1e3:7.3f} ms/client  "
        f"peak {memory.peak / 2**30:5.2f} GiB",
        flush=True,
    )
    return seconds, memory.peak / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-samples", type=int, default=100)
    parser.add_argument("--out", default="bench_scaling.png")
    args = parser.parse_args()
    per_round_sweep = [10, 30, 100, 300, 1000]
    population_sweep = [1_000, 10_000, 100_000]
    ray.init(
        num_cpus=2, include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1"
    )
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print("clients per round, population 10,000:")
            by_round = [measure(10_000, k, args, tmp) for k in per_round_sweep]
            print("population, 1,000 clients per round:")
            by_population = [measure(n, 1000, args, tmp) for n in population_sweep]
    finally:
        ray.shutdown()
    figure = Figure(figsize=(10, 4))
    for axis, xs, results, label in (
        (figure.add_subplot(1, 2, 1), per_round_sweep, by_round, "clients per round (N = 10,000)"),
        (
            figure.add_subplot(1, 2, 2),
            population_sweep,
            by_population,
            "population (1,000 clients per round)",
        ),
    ):
        axis.loglog(xs, [r[0] for r in results], "o-", label="s per round")
        axis.set_xlabel(label)
        axis.set_ylabel("seconds per round")
        twin = axis.twinx()
        twin.plot(xs, [r[1] for r in results], "s--", color="tab:red")
        twin.set_ylabel("peak memory above baseline (GiB)", color="tab:red")
        axis.grid(alpha=0.3)
    figure.suptitle("Cohort scaling: Synthetic(1,1), logistic regression, vectorised, 2 workers")
    figure.tight_layout()
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
