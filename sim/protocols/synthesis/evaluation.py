"""How a synthetic set is judged: MAUVE against held-out real examples, and the loss on
held-out real text of a small GPT trained on it (the downstream measure).

MAUVE (Pillutla et al., NeurIPS 2021) is computed by ``mauve-text`` from feature arrays: PCA,
k-means quantisation of both sets together (n/10 clusters), area under the divergence curve.
With all-MiniLM-L6-v2 features and n = 500 per side, two halves of one corpus score only ~0.72
here (DATA.md), so the protocol refuses fewer than ``min_mauve_samples`` (1000) per side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sim import checks, seeding
from sim.training.features import featurize

FEATURE_CHUNK = 64  # texts per featurizer batch: fixed, so a row never depends on the split


def mauve_score(p_features: np.ndarray, q_features: np.ndarray, seed: int) -> float:
    """MAUVE of two feature sets (rows), its k-means seeded by ``seed``."""
    import mauve

    result = mauve.compute_mauve(
        p_features=p_features, q_features=q_features, seed=seed, device_id=-1, verbose=False
    )
    return float(result.mauve)


def featurize_chunks(name: str, texts: Sequence[str]) -> np.ndarray:
    """Features of ``texts`` (a Ray task's share: whole chunks of :data:`FEATURE_CHUNK`)."""
    torch.set_num_threads(1)
    return featurize(name, list(texts), batch=FEATURE_CHUNK)


@dataclass
class Downstream:
    """The downstream measure: the learner (a small GPT, ``learner=downstream_gpt``) trained from
    scratch on a set for ``steps`` steps of ``batch_size`` examples (AdamW, ``lr``), tokenised by
    a byte-level BPE of ``vocab_size`` trained on the target's training examples; scored by its
    loss (nats per token) on ``eval_examples`` held-out real examples."""

    vocab_size: int = 2048
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    eval_examples: int = 500

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "steps", "batch_size", "eval_examples")
        checks.at_least(self, 257, "vocab_size")
        checks.positive(self, "lr")


def encode(tokenizer_json: str, texts: Sequence[str], context: int) -> list[np.ndarray]:
    """Each text as ``[<|endoftext|>, ids...]`` cut to ``context`` tokens (empty texts dropped)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    encoded = tokenizer.encode_batch(list(texts))
    return [np.r_[0, e.ids][:context].astype(np.int64) for e in encoded if e.ids]


def padded(rows: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask of the tokens to predict)`` right-padded: position t predicts t + 1."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width - 1)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row)
        mask[i, : len(row) - 1] = 1
    return ids, mask


def token_losses(model: torch.nn.Module, rows: Sequence[np.ndarray]) -> tuple[torch.Tensor, float]:
    """``(summed next-token loss, scored tokens)`` of ``rows``."""
    ids, mask = padded(rows)
    logits = model(ids[:, :-1])
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return (losses * mask).sum(), float(mask.sum())


def downstream_loss(
    texts: Sequence[str],
    eval_texts: Sequence[str],
    tokenizer_json: str,
    spec: Any,
    settings: Downstream,
    seed: int,
) -> dict[str, float]:
    """Train the downstream LM (``spec``) on ``texts`` (batches drawn by ``(seed, "downstream",
    step)``); its loss on ``eval_texts`` (nats per token) and the training set's size in tokens."""
    torch.set_num_threads(1)
    train = encode(tokenizer_json, texts, spec.context)
    held_out = encode(tokenizer_json, eval_texts, spec.context)
    if not train:
        raise ValueError(
            "every synthetic sample is empty: nothing to train the downstream model on"
        )
    torch.manual_seed(seeding.torch_seed(seed, "downstream_init"))
    model = spec.build(settings.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    batch = min(settings.batch_size, len(train))
    for step in range(settings.steps):
        rows = seeding.rng(seed, "downstream", step).choice(len(train), batch, replace=False)
        loss, count = token_losses(model, [train[i] for i in rows])
        optimizer.zero_grad(set_to_none=True)
        (loss / max(count, 1.0)).backward()
        optimizer.step()
    model.eval()
    total, count = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(held_out), 64):
            loss, n = token_losses(model, held_out[start : start + 64])
            total, count = total + float(loss), count + n
    return {
        "downstream_loss": total / count,
        "downstream_train_tokens": float(sum(len(r) - 1 for r in train)),
    }
