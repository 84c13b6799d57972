"""Simulation speed and fixed costs: Cohort against a plain single-process PyTorch floor.

    python bench/fl_throughput.py [--workload default|w1|w2|all] [--rounds 5] [--baseline DIR]
                                  [--floor-threads 1] [--max-samples 200]
                                  [--vector-clients-per-task 250] [--repeat 1] [--quick]

Every contender runs as its own process, one after the other, and is measured from process start
to exit: its time per round, its total wall time, and the peak proportional set size (PSS) of its
whole process tree (the driver and every Ray process; memory they share counted once), sampled
every 0.2 s as ``bench/tree_memory.py`` does, and the CPU seconds of that tree. ``--baseline
DIR`` runs every Cohort contender also from another checkout (``git worktree add DIR COMMIT``),
in the same pass, for a before/after table. ``--repeat N`` runs each contender N times (a
Cohort contender's before and after runs interleaved) and gives the medians: this machine's
speed drifts between runs by more than many a change.

- default: ``python -m sim`` (FedAvg on Synthetic(1,1), 60 rounds): total wall and the final
  parameters' SHA-256 (unchanged by speed work).
- W1: Fashion-MNIST, 100 clients by Dirichlet(0.5), the 784-200-200-10 MLP, 10 clients per round,
  1 local epoch, batch 32, lr 0.05.
- W2: Synthetic(1,1), 10,000 clients of at most ``--max-samples`` examples each (the lognormal
  sizes are unbounded otherwise), logistic regression, 1,000 clients per round, 1 epoch,
  batch 10, lr 0.05.

Cohort runs ``python -m sim`` with ``cluster.num_workers=1`` and ``=2`` (each worker 1 torch
thread, Ray given 2 CPUs); for W2 also ``protocol.client_engine=vectorized`` with
``--vector-clients-per-task`` clients per task. The floor is a plain PyTorch loop in one process
with no framework (1 torch thread unless ``--floor-threads``): the same data, cohorts, shuffles
(the same seed paths of ``sim.seeding``), local SGD and size-weighted averaging. Time per round
is the median over rounds 2..R-1 (round 1 warms up, round R evaluates). The evaluation round's
extra time, per example evaluated (the test set and the evaluated clients' own data), is set
against a training round's time per example trained. Prints the ratios to the floor next to the
targets, and, as a check that the floor does the same work, its final parameters against each
contender's. ``--quick``: tiny populations and 3 rounds, a smoke test (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tree_memory import watch

import sim
from sim import seeding
from sim.runtime.config import build_component
from sim.training.model import initial_params

RAY_CPUS = 2
GIB = 2**30
# Targets (issue "Fixed costs"), as ratios to the floor unless said otherwise.
TARGETS = {
    "default wall s": 12.0,
    "w1 s/round 2 workers": 0.55,
    "w1 wall 2 workers": 1.3,
    "w1 memory 2 workers": 2.0,
    "w2 s/round vectorized": 0.1,
    "w2 memory vectorized": 1.5,
    "evaluation / training per example": 1.0,
}


@dataclass
class Workload:
    """One benchmark: what it is, its Hydra overrides and the Cohort variants to time."""

    key: str
    title: str
    overrides: list[str]
    clients_per_round: int
    variants: dict[str, list[str]] = field(default_factory=dict)
    floor: bool = True  # False: no floor (the default run is timed as it is)


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
    default = Workload(
        "default",
        "default: `python -m sim` (FedAvg, Synthetic(1,1), 30 clients, logistic, 60 rounds)",
        [],
        10,
        {"cohort `python -m sim`": []},
        floor=False,
    )
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
    return {"default": default, "w1": w1, "w2": w2}


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
    """Plain minibatch SGD with cross-entropy, shuffling each epoch with the client's rng. The
    step is ``p -= lr * grad`` by hand: a ``torch.optim`` optimizer would add its 2 s import of
    ``torch._dynamo`` to the floor's wall time."""
    params = list(module.parameters())
    module.train()
    for _ in range(epochs):
        permutation = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(y), batch_size):
            take = permutation[start : start + batch_size]
            loss = F.cross_entropy(module(x[take]), y[take])
            for param in params:
                param.grad = None
            loss.backward()
            with torch.no_grad():
                for param in params:
                    param.add_(param.grad, alpha=-lr)


def run_floor(overrides: list[str], rounds: int) -> tuple[list[float], np.ndarray, int]:
    """FedAvg with no framework in this process; per-round times, the final parameters and the
    examples of round 2..R-1."""
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
    times, examples = [], 0
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
        examples += int(total) if 1 < round_index < rounds else 0
    return times, params.numpy(), examples


@dataclass
class Measured:
    """One contender's figures."""

    round_s: float  # median time per round, rounds 2..R-1
    wall_s: float  # process start to exit
    peak_gib: float  # peak PSS of the process tree
    processes: int
    cpu_s: float  # CPU seconds of the process tree (sampled: a lower bound)
    params: np.ndarray | None = None
    sha256: str = ""
    eval_ratio: float | None = None  # evaluation / training, per example


def median_of(runs: list[Measured]) -> Measured:
    """One contender's figures over its repeated runs: the median of each (the most processes);
    the runs must end with the same parameters."""
    if len({m.sha256 for m in runs}) != 1:
        raise SystemExit(f"repeated runs ended with other parameters: {[m.sha256 for m in runs]}")
    ratios = [m.eval_ratio for m in runs if m.eval_ratio is not None]
    return Measured(
        statistics.median(m.round_s for m in runs),
        statistics.median(m.wall_s for m in runs),
        statistics.median(m.peak_gib for m in runs),
        max(m.processes for m in runs),
        statistics.median(m.cpu_s for m in runs),
        runs[0].params,
        runs[0].sha256,
        statistics.median(ratios) if ratios else None,
    )


def measured_process(command: list[str], cwd: Path, log: Path) -> tuple[float, float, int, float]:
    """Run ``command``; its wall time, the peak PSS of its process tree (GiB), its most
    processes and their CPU seconds. Fails with the command's last output if it fails."""
    start = time.perf_counter()
    with log.open("w") as out:
        path = os.pathsep.join(filter(None, [str(cwd), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}  # Ray's workers import this checkout too
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = watch(proc, every=0.2)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    return wall, peak.pss_kib * 1024 / GIB, peak.processes, peak.cpu_s


def eval_ratio(history: list[dict], data_examples: int) -> float:
    """(last round's time - a training round's) / examples evaluated, over a training round's
    time per example trained (rounds 2..R-1)."""
    train = history[1:-1]
    per_trained = sum(r["round_time_s"] for r in train) / sum(r["examples"] for r in train)
    extra = history[-1]["round_time_s"] - statistics.median(r["round_time_s"] for r in train)
    return extra / data_examples / per_trained


def run_cohort(overrides: list[str], checkout: Path, tmp: Path, examples: int | None) -> Measured:
    """``python -m sim OVERRIDES`` from ``checkout``, in its own process."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    command = [sys.executable, "-m", "sim", *overrides, f"output_dir={out}/run"]
    wall, peak, processes, cpu = measured_process(command, checkout, out / "log.txt")
    history = [json.loads(line) for line in (out / "run" / "metrics.jsonl").open()]
    times = [record["round_time_s"] for record in history]
    summary = json.loads((out / "run" / "summary.json").read_text())
    with np.load(out / "run" / "checkpoints" / "checkpoint.npz") as checkpoint:
        params = checkpoint["params"]
    ratio = eval_ratio(history, examples) if examples else None
    return Measured(
        timed_median(times), wall, peak, processes, cpu, params, summary["params_sha256"], ratio
    )


def run_floor_process(workload: str, args: argparse.Namespace, tmp: Path) -> Measured:
    """The floor in its own process (this script with ``--floor-of``)."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    command = [sys.executable, __file__, *sys.argv[1:], "--floor-of", workload, "--out", str(out)]
    wall, peak, processes, cpu = measured_process(command, Path.cwd(), out / "log.txt")
    result = np.load(out / "floor.npz")
    sha = hashlib.sha256(result["params"].tobytes()).hexdigest()
    return Measured(
        timed_median(list(result["times"])), wall, peak, processes, cpu, result["params"], sha
    )


def floor_main(workload: Workload, args: argparse.Namespace) -> None:
    """``--floor-of``: run the floor here and save its times and parameters."""
    torch.set_num_threads(args.floor_threads)
    times, params, _ = run_floor([*workload.overrides, *common_overrides(args)], args.rounds)
    np.savez(Path(args.out) / "floor.npz", times=np.array(times), params=params)


def common_overrides(args: argparse.Namespace) -> list[str]:
    rounds = args.rounds
    return [
        f"seed={args.seed}",
        f"protocol.rounds={rounds}",
        f"protocol.eval_every={rounds}",
        f"protocol.eval_clients={EVAL_CLIENTS}",
        "protocol.checkpoint_every=0",
        "progress=false",
        f"cluster.num_cpus={RAY_CPUS}",
    ]


EVAL_CLIENTS = 10  # clients whose own data the last round evaluates (with the test set)


def evaluated_examples(overrides: list[str]) -> int:
    """Examples the evaluation round evaluates: the test set and the evaluated clients' data."""
    cfg = sim.compose(overrides)
    data = build_component("env", cfg.env).load(seeding.rng(cfg.seed, "env"))
    chosen = seeding.rng(cfg.seed, "eval_clients").choice(
        data.num_clients, EVAL_CLIENTS, replace=False
    )
    return len(data.test_y) + int(data.client_sizes()[chosen].sum())


def ratio_line(name: str, value: float, target: float, at_most: bool = True) -> str:
    met = value <= target if at_most else value >= target
    sign = "<=" if at_most else ">="
    return f"    {name}: {value:.2f}   target {sign} {target}   {'met' if met else 'MISSED'}"


def bench(workload: Workload, args: argparse.Namespace, tmp: Path) -> None:
    overrides = [*workload.overrides, *common_overrides(args)]
    if workload.key == "default":
        overrides = ["progress=false"]
    print(f"\n{workload.title}", flush=True)
    results: dict[str, Measured] = {}
    floor_name = f"floor: plain PyTorch, 1 process, {args.floor_threads} torch thread(s)"
    if workload.floor:
        floors = [run_floor_process(workload.key, args, tmp) for _ in range(args.repeat)]
        results[floor_name] = median_of(floors)
        print(f"  {floor_name}: done", flush=True)
    examples = evaluated_examples(overrides) if workload.key == "w1" else None
    checkouts = {"": Path.cwd()}
    if args.baseline:
        checkouts = {"before: ": Path(args.baseline), "after:  ": Path.cwd()}
    for name, extra in workload.variants.items():
        runs: dict[str, list[Measured]] = {label: [] for label in checkouts}
        for _ in range(args.repeat):  # before and after interleaved: drift hits both alike
            for label, checkout in checkouts.items():
                runs[label].append(run_cohort([*overrides, *extra], checkout, tmp, examples))
        for label in checkouts:
            results[label + name] = median_of(runs[label])
            print(f"  {label + name}: done", flush=True)

    floor = results.get(floor_name)
    width = max(len(name) for name in results)
    rounds = 60 if workload.key == "default" else args.rounds  # the default run: its own 60
    print(
        f"\n  s/round: median of rounds 2..R-1 of R = {rounds}; wall: process start to exit;"
        " memory: peak PSS of the process tree; CPU s: the tree's CPU time (cores: CPU s /"
        f" wall); each the median of {args.repeat} run(s); Ray 2 CPUs, 1 torch thread a worker"
    )
    header = f"  {'contender':<{width}}  {'s/round':>8} {'wall s':>7} {'GiB':>5} {'procs':>5}"
    header += f" {'CPU s':>6} {'cores':>5}"
    if floor:
        header += f"  {'round/fl':>8} {'wall/fl':>7} {'mem/fl':>6}  {'max|p - floor|':>14}"
    print(header + ("  eval/train" if examples else "") + "  params sha256")
    for name, m in results.items():
        line = f"  {name:<{width}}  {m.round_s:8.4f} {m.wall_s:7.1f} {m.peak_gib:5.2f}"
        line += f" {m.processes:5d} {m.cpu_s:6.1f} {m.cpu_s / m.wall_s:5.2f}"
        if floor:
            diff = np.abs(m.params - floor.params).max() if name != floor_name else 0.0
            line += (
                f"  {m.round_s / floor.round_s:7.2f}x {m.wall_s / floor.wall_s:6.2f}x "
                f"{m.peak_gib / floor.peak_gib:5.2f}x  {diff:14.2e}"
            )
        if examples:
            line += f"  {m.eval_ratio:10.2f}" if m.eval_ratio is not None else f"  {'-':>10}"
        print(line + f"  {m.sha256[:12]}")

    print("  targets (issue 'Fixed costs'; the 'after' figures):")
    after = {
        name.removeprefix("after:  "): m
        for name, m in results.items()
        if not name.startswith("before: ")
    }
    if workload.key == "default":
        m = after["cohort `python -m sim`"]
        print(ratio_line("wall s", m.wall_s, TARGETS["default wall s"]))
        if args.baseline:
            same = results["before: cohort `python -m sim`"].sha256 == m.sha256
            print(f"    params_sha256 as before: {'yes' if same else 'NO'}")
        return
    if workload.key == "w1":
        m = after["cohort sequential, 2 workers"]
        print(
            ratio_line(
                "s/round 2 workers / floor",
                m.round_s / floor.round_s,
                TARGETS["w1 s/round 2 workers"],
            )
        )
        print(
            ratio_line(
                "wall 2 workers / floor", m.wall_s / floor.wall_s, TARGETS["w1 wall 2 workers"]
            )
        )
        print(
            ratio_line(
                "memory 2 workers / floor",
                m.peak_gib / floor.peak_gib,
                TARGETS["w1 memory 2 workers"],
            )
        )
        print(
            ratio_line(
                "evaluation / training per example",
                m.eval_ratio,
                TARGETS["evaluation / training per example"],
            )
        )
        return
    for name, m in after.items():
        if "vectorized" in name:
            short = name.removeprefix("cohort ")
            print(
                ratio_line(
                    f"s/round {short} / floor",
                    m.round_s / floor.round_s,
                    TARGETS["w2 s/round vectorized"],
                )
            )
            print(
                ratio_line(
                    f"memory {short} / floor",
                    m.peak_gib / floor.peak_gib,
                    TARGETS["w2 memory vectorized"],
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("default", "w1", "w2", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (--quick: 3)")
    parser.add_argument("--baseline", help="another checkout: its Cohort runs beside this one's")
    parser.add_argument("--floor-threads", type=int, default=1)
    parser.add_argument("--max-samples", type=int, default=200, help="W2: examples per client")
    parser.add_argument(
        "--vector-clients-per-task", type=int, default=None, help="W2: default 250 (--quick: 25)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each contender (medians); before/after interleaved",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--floor-of", help=argparse.SUPPRESS)  # internal: run one floor
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.rounds < 3:
        parser.error("--rounds: need >= 3 (rounds 2..R-1 are timed)")
    if args.repeat < 1:
        parser.error("--repeat: must be >= 1")
    if args.floor_threads < 1:
        parser.error("--floor-threads: must be >= 1")
    if args.baseline and not (Path(args.baseline) / "sim" / "__main__.py").is_file():
        parser.error(f"--baseline: {args.baseline} is not a Cohort checkout")
    specs = workloads(args)
    if args.floor_of:
        floor_main(specs[args.floor_of], args)
        return
    chosen = ["default", "w1", "w2"] if args.workload == "all" else [args.workload]
    print(
        f"fl_throughput: {args.rounds} rounds, seed {args.seed}, floor torch threads "
        f"{args.floor_threads}, Ray {RAY_CPUS} CPUs, {os.cpu_count()} cores here, load average "
        f"{os.getloadavg()[0]:.2f}"
        + (f", baseline {args.baseline}" if args.baseline else "")
        + ("  [--quick: tiny sizes, a smoke test; the numbers mean nothing]" if args.quick else ""),
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        for key in chosen:
            bench(specs[key], args, Path(tmp))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
