"""A draft model for a pretrained target: DistillSpec's recipe (Zhou et al., "DistillSpec:
Improving Speculative Decoding via Knowledge Distillation", ICLR 2024, arXiv 2310.08461).

The draft uses the target's tokenizer (a GPT over the target's vocabulary, its input and output
embeddings tied). It is first trained on the domain's text with the next-token loss ("distil for
performance first": a draft that already models the domain), then distilled toward the target:
each step takes a batch of domain prompts (the first ``prompt_length`` tokens of examples) with
continuations of ``new_tokens`` tokens from a data source, and minimises ``D(p || q)`` (a
divergence of :func:`sim.training.distill.divergence`) at the continuation's positions
only (DistillSpec's loss ``1/|y| sum_t D(p(.|x, y<t) || q(.|x, y<t))`` over the output ``y``
given the input ``x``). Sources: ``fixed`` (the examples' own continuations), ``target`` (the
target's samples, drawn once: the target does not change) and ``draft`` (on-policy: the draft's
own samples; every ``refresh`` steps the current draft continues the prompts of the next
``refresh`` steps in one batch, so each step has fresh prompts and ``refresh`` sets only how
old the policy that wrote them is). The schedule is :class:`DraftTraining`, the method
(divergence, data, ...) the algorithm's (``algorithm=draft_distillspec``: DistillSpec's
fields). Every draw derives from ``seed``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import safetensors
import safetensors.torch
import torch

from sim import checks, seeding
from sim.data_dirs import cache_root, discard_damaged
from sim.training.distill import DIVERGENCES, divergence, next_token_loss
from sim.training.sampling import sample_continuations
from sim.training.speculative import device_of

SOURCES = ("fixed", "target", "draft")


class Method(Protocol):
    """What the recipe reads of the distillation method (DistillSpec's fields)."""

    divergence: str  # one of DIVERGENCES
    beta: float  # JSD's weight
    temperature: float  # of both distributions in the loss
    data: str  # one of SOURCES
    refresh: int
    prompt_length: int
    generation_temperature: float


@dataclass
class DraftTraining:
    """The draft's schedule: ``pretrain_steps`` next-token steps on domain windows of
    ``context`` tokens (AdamW at ``lr``), then ``steps`` distillation steps (``distill_lr``) of
    ``batch_size`` prompts continued by ``new_tokens`` tokens, each with a linear warm-up over a
    tenth of its steps and cosine decay; target-generated data draws ``target_pool``
    continuations once."""

    pretrain_steps: int = 300
    steps: int = 100
    batch_size: int = 8
    context: int = 128
    lr: float = 2e-3
    distill_lr: float = 5e-4
    new_tokens: int = 32
    target_pool: int = 256

    def __post_init__(self) -> None:
        checks.at_least(self, 0, "pretrain_steps", "steps")
        checks.at_least(self, 1, "batch_size", "context", "new_tokens", "target_pool")
        checks.positive(self, "lr", "distill_lr")


def token_examples(tokenizer: Any, texts: list[str], min_tokens: int) -> list[np.ndarray]:
    """Each text's token ids (int64), in order, keeping those of at least ``min_tokens``."""
    encoded = (np.asarray(tokenizer.encode(text), np.int64) for text in texts)
    return [ids for ids in encoded if len(ids) >= min_tokens]


def domain_stream(examples: list[np.ndarray], separator: int) -> np.ndarray:
    """The examples joined into one token stream, ``separator`` (the end-of-text id) after each."""
    parts = [np.append(ids, separator) for ids in examples]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def evenly_spaced(rows: list[np.ndarray], count: int, length: int) -> np.ndarray:
    """``(count, length)``: the first ``length`` tokens of ``count`` rows evenly spaced through
    ``rows`` (held-out prompts from across the domain, not from its first module)."""
    step = max(1, len(rows) // count)
    return np.stack([ids[:length] for ids in rows[::step][:count]])


def continuation_loss(
    method: Method, target_logits: torch.Tensor, draft_logits: torch.Tensor
) -> torch.Tensor:
    """The mean of ``method``'s divergence between the target's and the draft's next-token
    distributions at its temperature, over the positions that predict the continuation's
    tokens (those after the first ``prompt_length`` of each row), not the prompt's."""
    start = method.prompt_length - 1  # the logits at position i predict token i + 1
    t = method.temperature
    return divergence(
        method.divergence, target_logits[:, start:-1] / t, draft_logits[:, start:-1] / t,
        method.beta,
    ).mean()  # fmt: skip


def schedule(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over the first tenth of ``steps``, then cosine decay to a tenth of ``lr``."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer_step(model: torch.nn.Module, optimizer: Any, loss: torch.Tensor, lr: float) -> float:
    """One AdamW step at ``lr`` (gradients clipped to norm 1); the loss's value."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def pretrain(
    draft: torch.nn.Module, stream: np.ndarray, training: DraftTraining, seed: int,
    log: Any = print,
) -> list[float]:  # fmt: skip
    """Next-token training of ``draft`` on random windows of ``stream``; the per-step losses."""
    windows = len(stream) - training.context  # starts of windows of context + 1 tokens
    if training.pretrain_steps and windows < 1:
        raise ValueError(
            f"context: the domain's {len(stream)} tokens hold no window of {training.context + 1}"
        )
    rng = seeding.rng(seed, "draft", "pretrain")
    optimizer = torch.optim.AdamW(draft.parameters(), lr=training.lr, weight_decay=0.1)
    losses = []
    draft.train()
    for step in range(training.pretrain_steps):
        starts = rng.integers(0, windows, training.batch_size)
        rows = np.stack([stream[s : s + training.context + 1] for s in starts])
        tokens = torch.from_numpy(rows).to(device_of(draft))
        loss = next_token_loss(draft(tokens[:, :-1]), tokens[:, 1:])
        lr = schedule(step, training.pretrain_steps, training.lr)
        losses.append(optimizer_step(draft, optimizer, loss, lr))
        if (step + 1) % max(1, training.pretrain_steps // 5) == 0:
            log(f"[draft pretrain {step + 1}/{training.pretrain_steps}] loss {losses[-1]:.3f}")
    draft.eval()
    return losses


def check_method(method: Method) -> None:
    """Refuse a method the recipe cannot distil with, in one line."""
    if method.divergence not in DIVERGENCES:
        raise ValueError(
            f"algorithm.divergence: the recipe distils with one of {DIVERGENCES} (got "
            f"{method.divergence!r}; 'none' is the undistilled draft: no distillation steps)"
        )
    if method.data not in SOURCES:
        raise ValueError(f"algorithm.data: must be one of {SOURCES} (got {method.data!r})")


def distill(
    draft: torch.nn.Module,
    target: Any,
    examples: list[np.ndarray],
    training: DraftTraining,
    method: Method,
    seed: int,
    log: Any = print,
    evaluate: Callable[[int, float, dict[str, float]], None] | None = None,
    every: int = 1,
) -> dict[str, Any]:
    """``training.steps`` steps of :func:`continuation_loss` toward ``target`` (a model whose
    call gives logits) on ``method.data``; ``examples`` hold at least ``prompt_length +
    new_tokens`` tokens. ``evaluate(step, mean loss since the last call, seconds so far)`` runs
    after every ``every`` steps and the last. Returns the per-step losses and the seconds spent
    generating and training."""
    check_method(method)
    checks.at_least(method, 1, "refresh")
    if every < 1:
        raise ValueError(f"every: evaluate after every >= 1 steps (got {every})")
    rng = seeding.rng(seed, "draft", "distill", method.data)
    rows = np.stack([ids[: method.prompt_length + training.new_tokens] for ids in examples])
    size = training.batch_size
    if size > len(rows):
        raise ValueError(f"batch_size: {size} prompts exceed the {len(rows)} examples")
    device = device_of(draft)
    optimizer = torch.optim.AdamW(draft.parameters(), lr=training.distill_lr, weight_decay=0.0)
    timing = {"generate_s": 0.0, "train_s": 0.0}
    pool = block = None
    if method.data == "target":  # the target does not change: its samples are drawn once
        tick = time.perf_counter()
        chosen = rows[rng.choice(len(rows), min(training.target_pool, len(rows)), replace=False)]
        pool = continue_rows(target, chosen, method, training.new_tokens,
                             seeding.torch_seed(seed, "target_pool"))  # fmt: skip
        timing["generate_s"] += time.perf_counter() - tick
    losses: list[float] = []
    evaluated = 0  # the step of the last evaluation
    for step in range(training.steps):
        tick = time.perf_counter()
        if method.data == "draft":  # on-policy: the current draft writes the next block
            if step % method.refresh == 0:
                count = min(method.refresh, training.steps - step)
                picks = np.concatenate([rng.choice(len(rows), size, replace=False)
                                        for _ in range(count)])  # fmt: skip
                draft.eval()
                block = continue_rows(draft, rows[picks], method, training.new_tokens,
                                      seeding.torch_seed(seed, "on_policy", step))  # fmt: skip
            assert block is not None
            offset = (step % method.refresh) * size
            batch = block[offset : offset + size]
        else:
            picks = rng.choice(len(rows), size, replace=False)
            if pool is not None:
                batch = pool[torch.from_numpy(picks % len(pool)).to(pool.device)]
            else:
                batch = torch.from_numpy(rows[picks]).to(device)
        timing["generate_s"] += time.perf_counter() - tick
        tick = time.perf_counter()
        with torch.no_grad():
            target_logits = target(batch)
        draft.train()
        loss = continuation_loss(method, target_logits, draft(batch))
        lr = schedule(step, training.steps, training.distill_lr)
        losses.append(optimizer_step(draft, optimizer, loss, lr))
        timing["train_s"] += time.perf_counter() - tick
        if (step + 1) % max(1, training.steps // 5) == 0:
            log(f"[draft distill {step + 1}/{training.steps}] {method.divergence} {losses[-1]:.4f}")
        if evaluate is not None and ((step + 1) % every == 0 or step + 1 == training.steps):
            draft.eval()
            evaluate(step + 1, float(np.mean(losses[evaluated:])), dict(timing))
            evaluated = step + 1
    draft.eval()
    return {"losses": losses, **timing}


def continue_rows(
    model: Any, rows: np.ndarray, method: Method, new_tokens: int, seed: int
) -> torch.Tensor:
    """Each row's first ``method.prompt_length`` tokens continued by ``new_tokens`` sampled from
    ``model`` at ``method.generation_temperature``."""
    prompts = torch.from_numpy(np.ascontiguousarray(rows[:, : method.prompt_length]))
    return sample_continuations(model, prompts.to(device_of(model)), new_tokens,
                                method.generation_temperature, seed)  # fmt: skip


def load_cached(model: torch.nn.Module, path: Path) -> bool:
    """Whether ``model`` now holds the weights cached at ``path``; a file that cannot be read
    is removed with one warning (and False)."""
    if not path.is_file():
        return False
    try:
        safetensors.torch.load_model(model, str(path), device=str(device_of(model)))
        return True
    except (OSError, RuntimeError, safetensors.SafetensorError) as error:
        discard_damaged(path, error)
        return False


def save_atomically(model: torch.nn.Module, path: Path) -> None:
    """``model``'s weights as safetensors at ``path``, written beside it and renamed into
    place (a concurrent or killed write leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    safetensors.torch.save_model(model, str(staging))
    staging.replace(path)


def pretrained_draft(
    spec: Any,
    vocab_size: int,
    stream: np.ndarray,
    training: DraftTraining,
    seed: int,
    device: torch.device,
    cache_dir: str | None = None,
    rebuild: bool = False,
    log: Any = print,
) -> torch.nn.Module:
    """``spec.build(vocab_size)`` on ``device`` after :func:`pretrain` on ``stream``: cached
    under ``<cache_dir>/models/drafts`` by its shape, the pretraining settings, the seed, the
    device type and the stream's tokens, or trained now and cached (``rebuild``: trained
    again, by each caller). Concurrent runs on one machine that need the same draft (a sweep's
    arms of one seed side by side) train it once: the others wait for it (an flock on a file
    beside it; it does not serialise machines that share the cache folder over a network)."""
    described = {"draft": asdict(spec), "vocab": vocab_size, "seed": seed, "device": device.type,
                 "pretrain": [training.pretrain_steps, training.batch_size, training.context,
                              training.lr],
                 "stream": hashlib.sha256(stream.tobytes()).hexdigest()}  # fmt: skip
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root(cache_dir) / "models" / "drafts" / f"{key}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seeding.torch_seed(seed, "draft", "init"))
    draft = spec.build(vocab_size).to(device)
    with open(path.with_name(f"{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not rebuild and load_cached(draft, path):
            log(f"[draft pretrain] the cached draft {path.name}")
            return draft.eval()
        pretrain(draft, stream, training, seed, log)
        save_atomically(draft, path)
    return draft.eval()
