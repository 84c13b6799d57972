"""The cost of looking at every client's update: per-client aggregation (median, trimmed mean,
Krum) against the pre-added weighted sum (``aggregator=mean``), and DP-FedAvg against FedAvg.

    python bench/aggregation_cost.py [--clients-per-round 100 1000] [--rounds 6] [--repeat 2]

Workload: Synthetic(1,1), 10,000 clients of at most 50 examples, the 60-200-200-10 MLP (54,410
parameters), 1 local epoch, batch 10, the vectorized engine with 100 clients per task, 2 workers
on a local Ray of 2 CPUs (one Ray for every run, started once). Every variant runs ``--repeat``
times, the variants interleaved, in this one process; a run's seconds per round is the median of
its rounds 2..R-1 (round 1 warms up, round R evaluates), and the table gives the median over
repeats and its ratio to the baseline measured beside it (``mean`` for the aggregators, FedAvg
with uniform weights for DP-FedAvg: the same clients' work, plus clipping and the noise).
Bytes to the server per round: the tasks' float64 sums (every variant) plus, for per-client
aggregators, every client's float32 update.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import ray

import sim
from sim.runtime.session import start_local_ray

PARAMS = 60 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10
PER_TASK = 100
VARIANTS = {
    "mean": ["aggregator=mean"],
    "median": ["aggregator=median"],
    "trimmed_mean": ["aggregator=trimmed_mean"],
    "krum": ["aggregator=krum"],
    "fedavg uniform": ["algorithm.weighting=uniform"],
    "dp_fedavg": ["algorithm=dp_fedavg", "algorithm.noise_multiplier=1.0"],
}
BASELINE = {name: "mean" for name in ("median", "trimmed_mean", "krum")} | {
    "dp_fedavg": "fedavg uniform"
}
PER_CLIENT = {"median", "trimmed_mean", "krum"}


def seconds_per_round(args: argparse.Namespace, clients: int, overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = sim.run(
            [
                "env.num_clients=10000",
                "env.max_samples_per_client=50",
                "model=mlp",
                f"protocol.rounds={args.rounds}",
                f"protocol.eval_every={args.rounds}",
                "protocol.eval_clients=10",
                "protocol.checkpoint_every=0",
                f"protocol.clients_per_round={clients}",
                f"protocol.clients_per_task={PER_TASK}",
                "protocol.client_engine=vectorized",
                "algorithm.batch_size=10",
                "cluster.num_workers=2",
                "progress=false",
                *overrides,
                f"output_dir={out}/run",
            ]
        )
    return statistics.median(r["round_time_s"] for r in result.history[1:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients-per-round", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    start_local_ray(num_cpus=2, num_gpus=0, dashboard=False)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    for clients in args.clients_per_round:
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeat):
            for name, overrides in VARIANTS.items():
                times[name].append(seconds_per_round(args, clients, overrides))
        tasks = -(-clients // PER_TASK)
        print(f"\n{clients} clients per round ({tasks} tasks), {PARAMS} parameters")
        print(f"{'variant':<16} {'s/round':>8} {'ratio':>6} {'MB to server':>13}")
        for name, samples in times.items():
            median = statistics.median(samples)
            base = BASELINE.get(name)
            ratio = median / statistics.median(times[base]) if base else 1.0
            sent = tasks * PARAMS * 8 + (clients * PARAMS * 4 if name in PER_CLIENT else 0)
            base_name = f" (/{base})" if base else ""
            print(f"{name:<16} {median:>8.3f} {ratio:>6.2f} {sent / 1e6:>13.1f}{base_name}")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
