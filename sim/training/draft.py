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
target's samples, drawn once: the target does not change) and ``draft`` (on-policy: samples of the
current draft, regenerated every ``refresh`` steps). Every draw derives from ``seed``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


def token_examples(tokenizer: Any, texts: list[str], min_tokens: int) -> list[np.ndarray]:
    """Each text's token ids (int64), in order, keeping those of at least ``min_tokens``."""
    encoded = (np.asarray(tokenizer.encode(text), np.int64) for text in texts)
    return [ids for ids in encoded if len(ids) >= min_tokens]


def domain_stream(examples: list[np.ndarray], separator: int) -> np.ndarray:
    """The examples joined into one token stream, ``separator`` (the end-of-text id) after each."""
    parts = [np.append(ids, separator) for ids in examples]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def continuation_loss(
    name: str, target_logits: torch.Tensor, draft_logits: torch.Tensor, prompt_length: int
) -> torch.Tensor:
    """The mean of the divergence ``name`` between the target's and the draft's next-token
    distributions over the positions that predict the continuation's tokens (those after the
    first ``prompt_length`` of each row), not the prompt's."""
    start = prompt_length - 1  # the logits at position i predict token i + 1
    return divergence(name, target_logits[:, start:-1], draft_logits[:, start:-1]).mean()


@dataclass
class DraftRecipe:
    """DistillSpec's draft training: ``pretrain_steps`` next-token steps on domain windows of
    ``context`` tokens, then ``distill_steps`` steps of ``divergence`` toward the target on
    ``data`` (a source of :data:`SOURCES`; ``draft``: regenerated every ``refresh`` steps), batches
    of ``batch_size``, AdamW at ``lr`` (``distill_lr``) with a linear warm-up over a tenth of the
    steps and cosine decay. Continuations are sampled at ``temperature``."""

    pretrain_steps: int = 300
    distill_steps: int = 100
    batch_size: int = 8
    context: int = 128
    lr: float = 2e-3
    distill_lr: float = 5e-4
    divergence: str = "fkl"
    data: str = "draft"
    refresh: int = 1
    prompt_length: int = 32
    new_tokens: int = 32
    temperature: float = 1.0
    target_pool: int = 256  # target-generated continuations drawn once (data=target)

    def __post_init__(self) -> None:
        checks.at_least(self, 0, "pretrain_steps", "distill_steps")
        checks.at_least(self, 1, "batch_size", "context", "refresh", "prompt_length", "new_tokens")
        checks.at_least(self, 1, "target_pool")
        checks.positive(self, "lr", "distill_lr")
        checks.at_least(self, 0, "temperature")
        checks.one_of(self, "data", SOURCES)
        checks.one_of(self, "divergence", DIVERGENCES)


def schedule(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over the first tenth of ``steps``, then cosine decay to a tenth of ``lr``."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(
    draft: torch.nn.Module, stream: np.ndarray, recipe: DraftRecipe, seed: int, log: Any = print
) -> list[float]:
    """Next-token training of ``draft`` on random windows of ``stream``; the per-step losses."""
    rng = seeding.rng(seed, "draft", "pretrain")
    optimizer = torch.optim.AdamW(draft.parameters(), lr=recipe.lr, weight_decay=0.1)
    losses = []
    draft.train()
    for step in range(recipe.pretrain_steps):
        starts = rng.integers(0, len(stream) - recipe.context - 1, recipe.batch_size)
        windows = np.stack([stream[s : s + recipe.context + 1] for s in starts])
        rows = torch.from_numpy(windows).to(device_of(draft))
        for group in optimizer.param_groups:
            group["lr"] = schedule(step, recipe.pretrain_steps, recipe.lr)
        loss = next_token_loss(draft(rows[:, :-1]), rows[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(draft.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % max(1, recipe.pretrain_steps // 5) == 0:
            log(f"[draft pretrain {step + 1}/{recipe.pretrain_steps}] loss {loss:.3f}")
    draft.eval()
    return losses


def distill(
    draft: torch.nn.Module,
    target: Any,
    examples: list[np.ndarray],
    recipe: DraftRecipe,
    seed: int,
    log: Any = print,
    evaluate: Callable[[int, float, dict[str, float]], None] | None = None,
    every: int = 0,
) -> dict[str, Any]:
    """``distill_steps`` steps of :func:`continuation_loss` toward ``target`` (a model whose
    call gives logits) on ``recipe.data``; ``examples`` hold at least ``prompt_length + new_tokens``
    tokens. ``evaluate(step, mean loss since the last call, seconds so far)`` runs after every
    ``every`` steps and the last. Returns the per-step losses and the seconds spent generating
    and training."""
    rng = seeding.rng(seed, "draft", "distill", recipe.data)
    span = recipe.prompt_length + recipe.new_tokens
    rows = np.stack([ids[:span] for ids in examples])
    optimizer = torch.optim.AdamW(draft.parameters(), lr=recipe.distill_lr, weight_decay=0.0)
    timing = {"generate_s": 0.0, "train_s": 0.0}
    pool = batch = None
    if recipe.data == "target":  # the target does not change: its samples are drawn once
        tick = time.perf_counter()
        chosen = rows[rng.choice(len(rows), min(recipe.target_pool, len(rows)), replace=False)]
        pool = continue_rows(target, chosen, recipe, seeding.torch_seed(seed, "target_pool"))
        timing["generate_s"] += time.perf_counter() - tick
    losses = []
    for step in range(recipe.distill_steps):
        picks = rng.choice(len(rows), recipe.batch_size, replace=False)
        tick = time.perf_counter()
        if recipe.data == "fixed":
            batch = torch.from_numpy(rows[picks]).to(device_of(draft))
        elif recipe.data == "target":
            assert pool is not None
            batch = pool[torch.from_numpy(picks % len(pool)).to(pool.device)]
        elif batch is None or step % recipe.refresh == 0:  # on-policy: the current draft
            draft.eval()
            batch = continue_rows(
                draft, rows[picks], recipe, seeding.torch_seed(seed, "on_policy", step)
            )
        timing["generate_s"] += time.perf_counter() - tick
        tick = time.perf_counter()
        with torch.no_grad():
            target_logits = target(batch)
        draft.train()
        for group in optimizer.param_groups:
            group["lr"] = schedule(step, recipe.distill_steps, recipe.distill_lr)
        loss = continuation_loss(
            recipe.divergence, target_logits, draft(batch), recipe.prompt_length
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(draft.parameters(), 1.0)
        optimizer.step()
        timing["train_s"] += time.perf_counter() - tick
        losses.append(loss.item())
        if (step + 1) % max(1, recipe.distill_steps // 5) == 0:
            log(f"[draft distill {step + 1}/{recipe.distill_steps}] {recipe.divergence} {loss:.4f}")
        if evaluate is not None and ((step + 1) % every == 0 or step + 1 == recipe.distill_steps):
            draft.eval()
            evaluate(step + 1, float(np.mean(losses[-every:])), dict(timing))
    draft.eval()
    return {"losses": losses, **timing}


def continue_rows(model: Any, rows: np.ndarray, recipe: DraftRecipe, seed: int) -> torch.Tensor:
    """Each row's first ``prompt_length`` tokens continued by ``new_tokens`` sampled from
    ``model`` at the recipe's temperature."""
    prompts = torch.from_numpy(np.ascontiguousarray(rows[:, : recipe.prompt_length]))
    return sample_continuations(
        model, prompts.to(device_of(model)), recipe.new_tokens, recipe.temperature, seed
    )


def evenly_spaced(rows: list[np.ndarray], count: int, length: int) -> np.ndarray:
    """``(count, length)``: the first ``length`` tokens of ``count`` rows evenly spaced through
    ``rows`` (held-out prompts from across the domain, not from its first module)."""
    step = max(1, len(rows) // count)
    return np.stack([ids[:length] for ids in rows[::step][:count]])


def pretrained_draft(
    spec: Any,
    vocab_size: int,
    separator: int,
    train: list[np.ndarray],
    recipe: DraftRecipe,
    seed: int,
    cache_dir: str | None = None,
    rebuild: bool = False,
) -> torch.nn.Module:
    """``spec.build(vocab_size)`` after :func:`pretrain` on ``train`` (joined by
    ``separator``), on the CPU: cached under ``<cache_dir>/models/drafts`` by its shape, the
    pretraining settings, the seed and the examples, or trained now (and cached atomically;
    ``rebuild``: trained again)."""
    described = {"draft": asdict(spec), "vocab": vocab_size, "seed": seed,
                 "pretrain": [recipe.pretrain_steps, recipe.batch_size, recipe.context, recipe.lr],
                 "examples": [len(train), int(sum(len(ids) for ids in train))]}  # fmt: skip
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root(cache_dir) / "models" / "drafts" / f"{key}.safetensors"
    torch.manual_seed(seeding.torch_seed(seed, "draft", "init"))
    draft = spec.build(vocab_size)
    if path.is_file() and not rebuild:
        try:
            safetensors.torch.load_model(draft, str(path))
            return draft.eval()
        except (OSError, RuntimeError, safetensors.SafetensorError) as error:
            discard_damaged(path, error)
    pretrain(draft, domain_stream(train, separator), recipe, seed)
    save_atomically(draft, path)
    return draft.eval()


def save_atomically(model: torch.nn.Module, path: Path) -> None:
    """``model``'s weights as safetensors at ``path``, written beside it and renamed into
    place (a concurrent or killed write leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    safetensors.torch.save_model(model, str(staging))
    staging.replace(path)
