"""Simulation speed: Cohort's time per round against a plain single-process PyTorch floor.

    python bench/fl_throughput.py [--workload w1|w2|both] [--rounds 5] [--floor-threads 1]
                                  [--max-samples 200] [--vector-clients-per-task 250] [--quick]

Two FedAvg workloads, each run three ways in this one process tree, one after the other:

- W1: Fashion-MNIST, 100 clients by Dirichlet(0.5), the 784-200-200-10 MLP, 10 clients per round,
  1 local epoch, batch 32, lr 0.05.
- W2: Synthetic(1,1), 10,000 clients of at most ``--max-samples`` examples each (the lognormal
  sizes are unbounded otherwise), logistic regression, 1,000 clients per round, 1 epoch,
  batch 10, lr 0.05.

The three ways: Cohort, ``sim.run`` on one local Ray of 2 CPUs with ``cluster.num_workers=1``
and ``=2`` (each worker uses 1 torch thread); for W2 also ``protocol.client_engine=vectorized`` with
``--vector-clients-per-task`` clients per task, on 1 and 2 workers; and the floor, a plain
PyTorch loop in this process with no framework (1 torch thread unless ``--floor-threads``):
the same data, cohorts, shuffles (the same seed paths of ``sim.seeding``), local SGD and
size-weighted averaging. Time per round is the median over rounds 2..R-1 (round 1 warms up,
round R evaluates). Prints, per workload, the times, the ratios Cohort / floor, for W2 the
per-client framework overhead ``(Cohort - floor) / clients per round`` and the vectorised
speed-up ``floor / vectorised``, next to the issue's targets; and, as a check that the floor
does the same work, its final parameters against Cohort's. ``--quick``: tiny populations and
3 rounds, a smoke test of this script (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import ray
import torch
import torch.nn.functional as F
from torch import nn

import sim
from sim import seeding
from sim.runtime.config import build_component
from sim.training.model import initial_params

RAY_CPUS = 2
W1_TARGET = 0.65  # Cohort on 2 workers / floor, at most
W2_OVERHEAD_TARGET_MS = 1.0  # (Cohort - floor) per client, at most
VECTOR_TARGET = 3.0  # floor / vectorised, at least


@dataclass
class Workload:
    """One benchmark: what it is, its Hydra overrides and the Cohort variants to time."""

    key: str
    title: str
    overrides: list[str]
    clients_per_round: int
    variants: dict[str, list[str]] = field(default_factory=dict)


def workloads(args: argparse.Namespace) -> dict[str, Workload]:
    fmnist_clients, fmnist_per_round = (20, 10) if args.quick else (100, 10)
    synth_clients, synth_per_round = (500, 50) if args.quick else (10_000, 1_000)
    vector_per_task = args.vector_clients_per_task or (25 if args.quick else 250)
    sequential = {
        "cohort sequential, 1 worker": ["cluster.num_workers=1"],
        "cohort sequential, 2 workers": ["cluster.num_workers=2"],
    }
    vectorised = {
        f"cohort vectorized, 1 worker, {vector_per_task}/task": [
            "protocol.client_engine=vectorized",
            f"protocol.clients_per_task={vector_per_task}",
            "cluster.num_workers=1",
        ],
        f"cohort vectorized, 2 workers, {vector_per_task}/task": [
            "protocol.client_engine=vectorized",
            f"protocol.clients_per_task={vector_per_task}",
            "cluster.num_workers=2",
        ],
    }
    w1 = Workload(
        "w1",
        f"W1: Fashion-MNIST Dirichlet(0.5), {fmnist_clients} clients, MLP 784-200-200-10, "
        f"{fmnist_per_round} clients/round, 1 epoch, batch 32, lr 0.05",
        [
            "env=fashion_mnist",
            "env.dirichlet_alpha=0.5",
            f"env.num_clients={fmnist_clients}",
            *(["env.train_subset=2000"] if args.quick else []),
            "model=mlp",
            f"protocol.clients_per_round={fmnist_per_round}",
            "algorithm=fedavg",
            "algorithm.local_epochs=1",
            "algorithm.batch_size=32",
            "algorithm.client_lr=0.05",
        ],
        fmnist_per_round,
        dict(sequential),
    )
    w2 = Workload(
        "w2",
        f"W2: Synthetic(1,1), {synth_clients} clients of <= {args.max_samples} examples "
        f"(env.max_samples_per_client), logistic regression, {synth_per_round} clients/round, "
        "1 epoch, batch 10, lr 0.05",
        [
            "env=synthetic",
            "env.alpha=1.0",
            "env.beta=1.0",
            f"env.num_clients={synth_clients}",
            f"env.max_samples_per_client={args.max_samples}",
            "model=logistic",
            f"protocol.clients_per_round={synth_per_round}",
            "algorithm=fedavg",
            "algorithm.local_epochs=1",
            "algorithm.batch_size=10",
            "algorithm.client_lr=0.05",
        ],
        synth_per_round,
        {**sequential, **vectorised},
    )
    return {"w1": w1, "w2": w2}


def timed_median(times: list[float]) -> float:
    """Median of rounds 2..R-1 of per-round times listed from round 1."""
    return statistics.median(times[1:-1])


def set_flat(module: nn.Module, flat: torch.Tensor) -> None:
    """Copy a flat vector into the module's parameters (a copy: never alias ``flat``)."""
    with torch.no_grad():
        start = 0
        for param in module.parameters():
            param.copy_(flat[start : start + param.numel()].view_as(param))
            start += param.numel()


def floor_local_sgd(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    rng: np.random.Generator,
    epochs: int,
    batch_size: int,
    lr: float,
) -> None:
    """Plain minibatch SGD with cross-entropy, shuffling each epoch with the client's rng."""
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    module.train()
    for _ in range(epochs):
        permutation = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(y), batch_size):
            take = permutation[start : start + batch_size]
            loss = F.cross_entropy(module(x[take]), y[take])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def run_floor(overrides: list[str], rounds: int) -> tuple[list[float], np.ndarray]:
    """FedAvg with no framework in this process; per-round times and the final parameters."""
    cfg = sim.compose(overrides)
    data = build_component("env", cfg.env).load(seeding.rng(cfg.seed, "env"))
    spec = build_component("model", cfg.model)
    algorithm = build_component("algorithm", cfg.algorithm)
    epochs, batch_size, lr = algorithm.local_epochs, algorithm.batch_size, algorithm.client_lr
    module = spec.build(data.input_shape, data.num_classes)
    init = initial_params(
        lambda: spec.build(data.input_shape, data.num_classes),
        seeding.torch_seed(cfg.seed, "init"),
    )
    params = torch.from_numpy(init)
    times = []
    for round_index in range(1, rounds + 1):
        tick = time.perf_counter()
        cohort = seeding.sample_cohort(
            cfg.seed, round_index, data.num_clients, cfg.protocol.clients_per_round
        )
        weighted_sum = torch.zeros(len(params), dtype=torch.float64)
        total = 0.0
        for client in cohort:
            rows = data.client_indices(client)
            x, y = torch.from_numpy(data.x[rows]), torch.from_numpy(data.y[rows])
            rng = seeding.rng(cfg.seed, "client", round_index, int(client))
            set_flat(module, params)
            floor_local_sgd(module, x, y, rng, epochs, batch_size, lr)
            local = nn.utils.parameters_to_vector(module.parameters()).detach()
            weighted_sum += len(y) * (params - local).double()
            total += len(y)
        params = params - (weighted_sum / total).float()  # server SGD, lr 1: plain averaging
        times.append(time.perf_counter() - tick)
    return times, params.numpy()


def run_cohort(overrides: list[str], rounds: int) -> tuple[list[float], np.ndarray]:
    """``sim.run``; per-round times (``round_time_s``) and the final parameters."""
    result = sim.run(overrides)
    times = [record["round_time_s"] for record in sorted(result.history, key=lambda r: r["round"])]
    return times, result.params


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def bench(workload: Workload, args: argparse.Namespace, tmp: str) -> None:
    rounds = args.rounds
    common = [
        f"seed={args.seed}",
        f"protocol.rounds={rounds}",
        f"protocol.eval_every={rounds}",
        "protocol.eval_clients=10",
        "protocol.checkpoint_every=0",
        "progress=false",
    ]
    print(f"\n{workload.title}", flush=True)
    floor_name = f"floor: plain PyTorch, 1 process, {args.floor_threads} torch thread(s)"
    times, floor_params = run_floor([*workload.overrides, *common], rounds)
    medians = {floor_name: timed_median(times)}
    print(f"  {floor_name}: {medians[floor_name]:.4f} s/round", flush=True)
    differences = {}
    for name, extra in workload.variants.items():
        output = f"output_dir={tmp}/{workload.key}_{len(medians)}"
        times, params = run_cohort([*workload.overrides, *common, *extra, output], rounds)
        medians[name] = timed_median(times)
        differences[name] = float(np.abs(params - floor_params).max())
        print(f"  {name}: {medians[name]:.4f} s/round", flush=True)

    floor = medians[floor_name]
    print(
        f"\n  time per round: median of rounds 2..{rounds - 1} of {rounds} (round 1 warms up, "
        f"round {rounds} evaluates)\n  Ray {RAY_CPUS} CPUs, Cohort workers 1 torch thread each; "
        "sequential clients_per_task 5 (the config default)"
    )
    width = max(len(name) for name in medians)
    print(f"  {'variant':<{width}}  {'s/round':>8}  {'/ floor':>8}  {'max |params - floor|':>20}")
    for name, seconds in medians.items():
        diff = f"{differences[name]:.2e}" if name in differences else "-"
        print(f"  {name:<{width}}  {seconds:8.4f}  {seconds / floor:7.2f}x  {diff:>20}")

    print("  targets (issue 'Simulation speed'):")
    if workload.key == "w1":
        ratio = medians["cohort sequential, 2 workers"] / floor
        print(
            f"    Cohort 2 workers / floor = {ratio:.2f}x   target <= {W1_TARGET}x   "
            f"{verdict(ratio <= W1_TARGET)}"
        )
        return
    for name in workload.variants:
        if name.startswith("cohort sequential"):
            overhead_ms = (medians[name] - floor) / workload.clients_per_round * 1e3
            print(
                f"    overhead per client, {name.removeprefix('cohort ')}: {overhead_ms:.3f} ms"
                f"   target <= {W2_OVERHEAD_TARGET_MS} ms   "
                f"{verdict(overhead_ms <= W2_OVERHEAD_TARGET_MS)}"
            )
    for name in workload.variants:
        if name.startswith("cohort vectorized"):
            speedup = floor / medians[name]
            print(
                f"    speed-up floor / {name.removeprefix('cohort ')}: {speedup:.2f}x"
                f"   target >= {VECTOR_TARGET}x   {verdict(speedup >= VECTOR_TARGET)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("w1", "w2", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (--quick: 3)")
    parser.add_argument("--floor-threads", type=int, default=1)
    parser.add_argument("--max-samples", type=int, default=200, help="W2: examples per client")
    parser.add_argument(
        "--vector-clients-per-task", type=int, default=None, help="W2: default 250 (--quick: 25)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.rounds < 3:
        parser.error("--rounds: need >= 3 (rounds 2..R-1 are timed)")
    if args.floor_threads < 1:
        parser.error("--floor-threads: must be >= 1")
    chosen = ["w1", "w2"] if args.workload == "both" else [args.workload]
    torch.set_num_threads(args.floor_threads)  # the floor runs in this process
    print(
        f"fl_throughput: {args.rounds} rounds, seed {args.seed}, floor torch threads "
        f"{args.floor_threads}, Ray {RAY_CPUS} CPUs, {os.cpu_count()} cores here"
        + ("  [--quick: tiny sizes, a smoke test; the numbers mean nothing]" if args.quick else ""),
        flush=True,
    )
    ray.init(
        num_cpus=RAY_CPUS,
        include_dashboard=False,
        logging_level="ERROR",
        _node_ip_address="127.0.0.1",
    )
    try:
        specs = workloads(args)
        with tempfile.TemporaryDirectory() as tmp:
            for key in chosen:
                bench(specs[key], args, tmp)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
