"""Language-model training speed: the teacher-student protocol's Ray Train student against a
plain single-process PyTorch loop, and the cost of asking the teacher.

    python bench/lm_throughput.py [--steps 20] [--batch 16] [--quick]

The student and teacher are ``experiment=salt``'s (student GPT 4 x 192, context 128, vocabulary
4096, 2.6M parameters; teacher 2 x 128, trained once and cached, shared with the preset) on
Shakespeare, AdamW, global batch ``--batch`` windows. Each contender runs
``2 x --steps`` steps; tokens/s is that of the second half (the first warms up; evaluation is not
counted):

- plain: this process, 1 torch thread, the same windows, batches, model, optimizer and schedule
  (``sim.protocols.teacher_student`` data and trainer functions), no Ray;
- trainer, 1 and 2 Ray Train workers of 1 CPU (``python -m sim algorithm=lm``);
- trainer with the teacher every step (``algorithm=rkd``: top-10 soft labels, prefetched one
  step ahead), 1 and 2 workers: the distillation phase's extra cost.

Prints tokens/s per contender, the ratios trainer / plain (goal >= 0.95 on one worker) and
distilling / plain training, the teacher wait, and the load average. ``--quick``: tiny sizes, a
smoke test of this script (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

import sim
from envs.text import TextCorpus
from models.gpt import GPT
from sim.protocols.teacher_student.data import step_windows, window_starts, window_tokens
from sim.protocols.teacher_student.trainer import LoopSettings, learning_rate
from sim.training.distill import next_token_loss

GOAL = 0.95  # trainer on one worker / plain loop, at least


def plain_loop(spec: GPT, steps: int, batch: int, lr: float) -> float:
    """Tokens/s of the second half of ``steps`` plain training steps (1 torch thread)."""
    torch.set_num_threads(1)
    streams = TextCorpus().token_streams()
    candidates = window_starts(len(streams.train), spec.context)
    settings = LoopSettings(steps, batch, spec.context, lr, 20, 0.1, 0.1, 1.0, steps, steps, 10,
                            1, 0, "student_init")  # fmt: skip
    torch.manual_seed(0)
    model = spec.build(streams.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    half = steps // 2
    for step in range(steps):
        if step == half:
            tick = time.perf_counter()
        starts = step_windows(0, step, candidates, batch)
        tokens = torch.from_numpy(window_tokens(streams.train, starts, spec.context))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        loss = next_token_loss(model(tokens[:, :-1]), tokens[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return (steps - half) * batch * spec.context / (time.perf_counter() - tick)


def trainer(overrides: list[str], steps: int, out: str) -> dict:
    """The last evaluation record of a run of the protocol (its tokens/s: the second half)."""
    result = sim.run(
        [*overrides, f"protocol.steps={steps}", f"protocol.eval_every={steps // 2}",
         f"protocol.checkpoint_every={steps}", "protocol.eval_windows=8", "progress=false",
         f"output_dir={out}"]
    )  # fmt: skip
    return result.history[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps (x2 are run)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    spec = GPT(layers=2, width=64, heads=2, context=64) if args.quick else GPT(4, 192, 6, 128)
    steps = 2 * args.steps
    model = [f"model.layers={spec.layers}", f"model.width={spec.width}",
             f"model.heads={spec.heads}", f"model.context={spec.context}"]  # fmt: skip
    common = ["experiment=salt", *model, f"protocol.batch_size={args.batch}", "cluster.num_cpus=2"]
    if args.quick:
        common += ["protocol.teacher.width=32", "protocol.teacher.heads=2",
                   "protocol.teacher.steps=10"]  # fmt: skip
    print(f"model {spec} ({spec.num_params(4096) / 1e6:.1f}M params), global batch {args.batch} "
          f"x {spec.context} tokens, {steps} steps, the second half timed")  # fmt: skip
    plain = plain_loop(spec, steps, args.batch, 1e-3)
    rows = [("plain loop (1 process, 1 thread)", plain, None)]
    with tempfile.TemporaryDirectory() as out:
        for name, algorithm, workers in (
            ("trainer, 1 worker", "lm", 1),
            ("trainer, 2 workers", "lm", 2),
            ("trainer + teacher every step, 1 worker", "rkd", 1),
            ("trainer + teacher every step, 2 workers", "rkd", 2),
        ):
            record = trainer(
                [f"algorithm={algorithm}", f"cluster.num_workers={workers}", *common],
                steps,
                os.path.join(out, f"{algorithm}{workers}"),
            )
            rows.append((name, record["tokens_per_s"], record["teacher_wait_s"]))
    print(f"\n{'contender':42s} {'tokens/s':>9s} {'/ plain':>8s} {'teacher wait':>13s}")
    for name, rate, wait in rows:
        waited = f"{wait:.2f} s" if wait is not None else "-"
        print(f"{name:42s} {rate:9.0f} {rate / plain:8.2f} {waited:>13s}")
    rates = {name: rate for name, rate, _ in rows}
    for workers in (1, 2):
        plural = "s" if workers > 1 else ""
        kd = rates[f"trainer + teacher every step, {workers} worker{plural}"]
        base = rates[f"trainer, {workers} worker{plural}"]
        print(f"distillation's cost, {workers} worker{plural}: {base / kd:.2f}x the time per step")
    one = rates["trainer, 1 worker"] / plain
    print(f"goal: trainer on 1 worker / plain >= {GOAL}: {one:.2f} "
          f"({'met' if one >= GOAL else 'not met'})")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
