"""The language-model training loop that every Ray Train worker runs (``TorchTrainer``, DDP).

Each step's global batch is a pure function of ``(seed, step)`` (:mod:`.data`) and each worker
trains on its consecutive share, so 1 or 2 workers at the same global batch compute the same
updates (to float rounding). When the algorithm weighs the teacher at a step, the worker asks the
teacher actor for that step's soft labels one step ahead (prefetch). Rank 0 sends every
evaluation record and every checkpoint (model and optimizer state) to the driver through a queue;
the driver writes them (the protocol's ``RunContext``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sim import seeding
from sim.interfaces.teacher_student import SoftLabels, StudentAlgorithm
from sim.protocols.teacher_student.data import shard, step_windows, window_tokens
from sim.training.distill import next_token_loss


@dataclass(frozen=True)
class LoopSettings:
    """What one training run of the loop needs besides the model and the data."""

    steps: int
    batch_size: int  # sequences per step, over all workers
    context: int
    lr: float
    warmup_steps: int
    min_lr_ratio: float
    weight_decay: float
    grad_clip: float
    eval_every: int
    checkpoint_every: int
    top_k: int
    threads: int
    seed: int
    init_stream: str  # the seed path of the model's initialisation ("student_init", ...)


def learning_rate(step: int, settings: LoopSettings) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr``."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    floor = settings.min_lr_ratio
    return settings.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def state_arrays(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Model and AdamW state as named numpy arrays (a checkpoint without pickles)."""
    arrays = {f"model/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            arrays[f"optimizer/{index}/{key}"] = torch.as_tensor(value).cpu().numpy()
    return arrays


def load_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, arrays: dict) -> None:
    model.load_state_dict(
        {k.removeprefix("model/"): torch.tensor(v) for k, v in arrays.items()
         if k.startswith("model/")}
    )  # fmt: skip
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in arrays.items():
        if name.startswith("optimizer/"):
            _, index, key = name.split("/")
            state.setdefault(int(index), {})[key] = torch.tensor(value)
    optimizer.load_state_dict(
        {"state": state, "param_groups": optimizer.state_dict()["param_groups"]}
    )


def _all_reduce(values: list[float], world: int) -> list[float]:
    """Sum ``values`` over the workers."""
    tensor = torch.tensor(values, dtype=torch.float64)
    if world > 1:
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``; ``config`` is built by the protocol's job."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    settings: LoopSettings = config["settings"]
    algorithm: StudentAlgorithm | None = config["algorithm"]
    teacher, queue = config["teacher"], config["queue"]
    torch.set_num_threads(settings.threads)
    device = ray.train.torch.get_device()
    train, validation = ray.get(config["train"]), ray.get(config["validation"])
    candidates, selected = config["candidates"], config["selected"]
    eval_starts = np.array_split(config["eval_starts"], world)[rank]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.torch_seed(settings.seed, settings.init_stream))
        model = config["spec"].build(config["vocab_size"])
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    start_step = config["start_step"]
    if config["start"] is not None:
        load_state(model, optimizer, ray.get(config["start"]))
    model = ray.train.torch.prepare_model(model)  # DDP when world > 1; moved to the device
    module = getattr(model, "module", model)

    def plan(step: int) -> tuple[np.ndarray, float]:
        weight = algorithm.teacher_weight(step, settings.steps) if algorithm else 0.0
        pool = selected if weight > 0 and selected is not None else candidates
        starts = step_windows(settings.seed, step, pool, settings.batch_size)
        return shard(starts, rank, world), weight

    def ask(step: int):
        starts, weight = plan(step)
        if weight <= 0 or step >= settings.steps:
            return None
        return teacher.soft_labels.remote(starts, settings.top_k, algorithm.temperature)

    pending = ask(start_step)
    train_losses: list[float] = []
    waited, tick = 0.0, time.perf_counter()
    for step in range(start_step, settings.steps):
        starts, weight = plan(step)
        tokens = torch.from_numpy(window_tokens(train, starts, settings.context)).to(device)
        soft = None
        if pending is not None:
            wait = time.perf_counter()
            answer: SoftLabels = ray.get(pending)
            waited += time.perf_counter() - wait
            soft = SoftLabels(
                torch.tensor(answer.indices, device=device),
                torch.tensor(answer.probabilities, device=device),
            )
        pending = ask(step + 1)  # the teacher works on the next batch while this one trains
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        logits = model(tokens[:, :-1])
        targets = tokens[:, 1:]
        if algorithm is None:
            objective = next_token_loss(logits, targets)
        else:
            objective = algorithm.loss(logits, targets, soft, weight)
        if weight > 0:  # the objective mixes in the teacher's term: record the loss alone
            with torch.no_grad():
                loss = next_token_loss(logits.detach(), targets)
        else:
            loss = objective
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        train_losses.append(float(loss.detach()))

        done = step + 1
        if done % settings.eval_every and done != settings.steps:
            continue
        elapsed = time.perf_counter() - tick  # training only: the evaluation is not counted
        trained = len(train_losses) * settings.batch_size * settings.context
        loss_sum, count = evaluate(module, validation, eval_starts, settings.context, device)
        loss_sum, count, train_sum, steps_seen, waited_all = _all_reduce(
            [loss_sum, count, sum(train_losses), len(train_losses), waited], world
        )
        if rank == 0:
            record = {
                "step": done,
                "tokens": done * settings.batch_size * settings.context,
                "train_loss": train_sum / steps_seen,
                "validation_loss": loss_sum / count,
                "tokens_per_s": trained / elapsed,
                "teacher_wait_s": waited_all / world,
            }
            queue.put(("record", record))
            if done % settings.checkpoint_every == 0 or done == settings.steps:
                queue.put(("checkpoint", done, state_arrays(module, optimizer)))
        train_losses, waited, tick = [], 0.0, time.perf_counter()


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    stream: np.ndarray,
    starts: np.ndarray,
    context: int,
    device: torch.device,
    block: int = 16,
) -> tuple[float, float]:
    """Summed next-token loss (nats) and token count over the windows at ``starts``."""
    model.eval()
    total, count = 0.0, 0
    for begin in range(0, len(starts), block):
        tokens = torch.from_numpy(window_tokens(stream, starts[begin : begin + block], context))
        tokens = tokens.to(device)
        logits = model(tokens[:, :-1])
        total += float(next_token_loss(logits, tokens[:, 1:])) * tokens[:, 1:].numel()
        count += tokens[:, 1:].numel()
    model.train()
    return total, float(count)
