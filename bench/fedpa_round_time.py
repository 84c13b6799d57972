"""Time per federated round of FedPA against FedAvg at the same local epochs, side by side.

    python bench/fedpa_round_time.py [--rounds 8] [--local-epochs 5]

Both run on one local Ray, same env, model, cohort sizes and client settings (Fashion-MNIST,
100 clients Dirichlet(0.3), 10 per round, the 784-200-200-10 MLP, batch 20). FedPA runs with
``burn_in_rounds=0`` so every timed round computes posterior deltas. Prints the median round
time of each (the first round and evaluation rounds excluded) and the ratio FedPA / FedAvg.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import ray

import sim


def median_round_time(history: list[dict]) -> float:
    timed = [r["round_time_s"] for r in history[1:] if "test_loss" not in r]
    return statistics.median(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    common = [
        "env=fashion_mnist",
        "env.dirichlet_alpha=0.3",
        "model=mlp",
        f"protocol.rounds={args.rounds}",
        f"protocol.eval_every={args.rounds}",
        "protocol.eval_clients=10",
        "progress=false",
        f"algorithm.local_epochs={args.local_epochs}",
        "algorithm.batch_size=20",
        "algorithm.client_lr=0.02",
        "algorithm.client_momentum=0.9",
    ]
    variants = {
        "fedavg": ["algorithm=fedavg"],
        "fedpa": ["algorithm=fedpa", "algorithm.burn_in_rounds=0", "algorithm.burn_in_epochs=1"],
    }
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR")
    try:
        times = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, overrides in variants.items():
                result = sim.run([*common, *overrides, f"output_dir={tmp}/{name}"])
                times[name] = median_round_time(result.history)
                print(f"{name:>7}: {times[name]:.3f} s per round (median of timed rounds)")
    finally:
        ray.shutdown()
    print(
        f"ratio fedpa / fedavg = {times['fedpa'] / times['fedavg']:.2f} "
        f"({args.local_epochs} local epochs, {args.num_cpus} CPUs)"
    )


if __name__ == "__main__":
    main()
