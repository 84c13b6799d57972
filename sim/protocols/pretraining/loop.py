"""The pre-training loop every Ray Train worker runs (``TorchTrainer``, DDP).

Each step's global batch is a pure function of ``(seed, step)``: the raw windows
(:func:`~sim.protocols.teacher_student.data.step_windows`) and the objective's corruption of them
on the stream ``(seed, "corruption", step)``, made on the whole batch; each worker trains on its
consecutive share, so 1 or 2 workers compute the same updates (to float rounding). The model and
the objective's auxiliary modules train as one DDP module under one AdamW, at T5's learning rate
schedule (linear warm-up, then inverse square root), which makes a snapshot at step s the model
a run of s steps would give (SpacTor's tau counts steps, so this holds for it too). Rank 0 sends
every evaluation record, every checkpoint (model, auxiliary and optimizer state) and every
snapshot for fine-tuning (the model alone) to the driver through the queue.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sim import seeding
from sim.protocols.cadence import Cadence
from sim.protocols.ray_train import all_reduce_sums, load_state, model_arrays, state_arrays
from sim.protocols.teacher_student.data import shard, step_windows, window_tokens
from sim.training.span_corruption import span_loss


@dataclass(frozen=True)
class PretrainSettings:
    """What one pre-training run of the loop needs besides the model, objective and data."""

    steps: int
    batch_size: int  # examples per step, over all workers
    inputs_length: int
    lr: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    eval_every: int
    checkpoint_every: int
    snapshots: tuple[int, ...]  # steps whose model is fine-tuned
    threads: int
    seed: int

    @property
    def cadence(self) -> Cadence:
        return Cadence(self.steps, self.eval_every, self.checkpoint_every)


def inverse_sqrt_rate(step: int, lr: float, warmup_steps: int) -> float:
    """T5's schedule with a warm-up: ``lr (step + 1) / warmup`` for the first ``warmup`` steps,
    then ``lr sqrt(warmup / (step + 1))`` (Raffel et al. 2020, Section 3.1.2)."""
    warmup = max(1, warmup_steps)
    done = step + 1
    return lr * done / warmup if done < warmup else lr * math.sqrt(warmup / done)


class Pretrainer(nn.Module):
    """The encoder-decoder and the objective's auxiliary modules as one module, whose forward
    is the objective's loss (so that DDP sees every parameter the loss uses). Steps that leave
    the auxiliary modules out (SpacTor after tau) add them to the graph at zero weight: DDP then
    needs no search for unused parameters, and their gradients are zero."""

    def __init__(self, model: nn.Module, auxiliary: nn.Module | None, objective: Any) -> None:
        super().__init__()
        self.model, self.auxiliary, self.objective = model, auxiliary, objective

    def forward(self, batch: dict[str, torch.Tensor], step: int, steps: int):
        loss, parts = self.objective.loss(self.model, self.auxiliary, batch, step, steps)
        if self.auxiliary is not None:
            loss = loss + 0.0 * sum(p.sum() for p in self.auxiliary.parameters())
        return loss, parts


@torch.no_grad()
def validation_loss(model: nn.Module, batch: dict[str, np.ndarray], device, block: int = 32):
    """Summed span-corruption loss (nats per target token, times tokens) and the token count."""
    model.eval()
    total, count = 0.0, 0
    for begin in range(0, len(batch["inputs"]), block):
        part = {k: torch.from_numpy(v[begin : begin + block]).to(device) for k, v in batch.items()}
        loss = span_loss(model(part["inputs"], part["decoder_inputs"]), part["targets"])
        total += float(loss) * part["targets"].numel()
        count += part["targets"].numel()
    model.train()
    return total, float(count)


def pretrain_loop(config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``; ``config`` is built by the protocol's job."""
    import ray
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    settings: PretrainSettings = config["settings"]
    objective, spec, vocab, queue = (config[k] for k in ("objective", "spec", "vocab", "queue"))
    torch.set_num_threads(settings.threads)
    device = ray.train.torch.get_device()
    train = ray.get(config["train"])
    raw = objective.lengths(settings.inputs_length)[0]
    held = {k: np.array_split(v, world)[rank] for k, v in config["validation"].items()}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.torch_seed(settings.seed, "model_init"))
        model = spec.build(vocab.size)
        torch.manual_seed(seeding.torch_seed(settings.seed, "auxiliary_init"))
        auxiliary = objective.auxiliary(spec, vocab)
    net = Pretrainer(model, auxiliary, objective)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    net = ray.train.torch.prepare_model(net)  # DDP when world > 1; moved to the device
    module = getattr(net, "module", net)
    if config["start"] is not None:  # after the move: the optimizer's state follows the device
        load_state(module, optimizer, ray.get(config["start"]))

    start_step = config["start_step"]
    flops = config["start_flops"]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    tick = time.perf_counter()
    for step in range(start_step, settings.steps):
        starts = step_windows(settings.seed, step, config["candidates"], settings.batch_size)
        rows = window_tokens(train, starts, raw - 1)
        rng = seeding.rng(settings.seed, "corruption", step)
        batch = objective.batch(rows, vocab, step, settings.steps, rng)
        local = {k: torch.from_numpy(shard(v, rank, world)).to(device) for k, v in batch.items()}
        rate = inverse_sqrt_rate(step, settings.lr, settings.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = rate
        loss, parts = net(local, step, settings.steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), settings.grad_clip)
        optimizer.step()
        for name, value in {"train_loss": loss.detach(), **parts}.items():
            sums[name] = sums.get(name, 0.0) + float(value)
            counts[name] = counts.get(name, 0) + 1
        flops += settings.batch_size * objective.step_flops(
            spec, vocab, settings.inputs_length, step, settings.steps
        )

        done = step + 1
        if not settings.cadence.evaluates(done):
            continue
        elapsed = time.perf_counter() - tick  # training only: the evaluation is not counted
        names = sorted(sums)
        loss_sum, count, *totals = all_reduce_sums(
            [*validation_loss(module.model, held, device), *(sums[n] for n in names)], world
        )
        if rank == 0:
            record = {
                "step": done,
                "tokens": done * settings.batch_size * raw,
                "flops": flops,
                **{n: t / world / counts[n] for n, t in zip(names, totals, strict=True)},
                "validation_loss": loss_sum / count,
                "tokens_per_s": counts["train_loss"] * settings.batch_size * raw / elapsed,
            }
            queue.put(("record", record))
            if done in settings.snapshots:
                queue.put(("snapshot", done, model_arrays(module.model)))
            if settings.cadence.checkpoints(done):
                queue.put(("checkpoint", done, state_arrays(module, optimizer)))
        sums, counts, tick = {}, {}, time.perf_counter()
