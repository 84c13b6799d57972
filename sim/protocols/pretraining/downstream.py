"""Downstream proxy tasks: a pre-trained encoder-decoder fine-tuned on held-out documents.

The held-out documents are the corpus's validation and test splits (never trained on in
pre-training); each is cut into consecutive passages of the pre-training example's raw length,
and a document's first ``1 - test_fraction`` of passages are the task's training data, the rest
its test data. Tasks, text-to-text as in T5:

- ``documents``: which held-out document (for Shakespeare, which play) a passage comes from: a
  linear head (zero-initialised) on the mean of the encoder's outputs over the passage (its
  first ``model.context`` tokens), trained with the whole model. Score: ``documents_accuracy``.
- ``infill``: span corruption of the passages; the training passages are corrupted afresh at
  every step, the test passages once, the same for every run (stream ``(0, "infill_test")``).
  Scores: ``infill_exact_match``, the fraction of the test spans whose greedy decoding is exactly
  right (:func:`span_matches`), and ``infill_loss``, the decoder's cross-entropy on the test
  targets (nats per target token, teacher-forced): the smoother of the two at small scale.

Every fine-tuning starts from a pre-training snapshot with the same budget (``steps`` steps of
``batch_size``, AdamW at a constant ``lr``) and the same data order for a given seed (stream
``(seed, "finetune", task)``), whatever the variant or the snapshot's step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sim import checks, seeding
from sim.training.span_corruption import Vocabulary, span_batch, span_loss, target_spans

TASKS = ("documents", "infill")
SCORES = ("documents_accuracy", "infill_exact_match", "infill_loss")


@dataclass
class Downstream:
    """Which snapshots are fine-tuned (``at``: fractions of the pre-training steps), on which
    ``tasks``, with what budget; ``documents``: at most this many held-out documents (None: all).
    """

    at: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    steps: int = 100
    batch_size: int = 32
    lr: float = 3e-4
    test_fraction: float = 0.2
    documents: int | None = None

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "steps", "batch_size")
        checks.at_least(self, 2, "documents", optional=True)
        checks.positive(self, "lr")
        checks.in_interval(self, 0, 1, "test_fraction")
        if any(not 0 < a <= 1 for a in self.at):
            raise ValueError(f"at: fractions of the steps in (0, 1] (got {list(self.at)})")
        tasks = list(self.tasks)
        if not tasks or len(set(tasks)) < len(tasks) or any(t not in TASKS for t in tasks):
            raise ValueError(f"tasks: one or more of {TASKS}, each once (got {tasks})")


@dataclass(frozen=True)
class TaskData:
    """Passages ``(n, raw tokens)`` and their documents, split into train and test."""

    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    classes: int


def split_at(stream: np.ndarray, eos: int) -> list[np.ndarray]:
    """The documents of a token stream (each ends with ``eos``), without their ``eos``."""
    ends = np.flatnonzero(np.asarray(stream) == eos)
    starts = np.r_[0, ends[:-1] + 1]
    return [np.asarray(stream[s:e]) for s, e in zip(starts, ends, strict=True) if e > s]


def task_data(
    documents: list[np.ndarray], length: int, test_fraction: float, limit: int | None
) -> TaskData:
    """Each document's consecutive ``length``-token passages, the first ``1 - test_fraction``
    for training and the rest for testing (at least one of each); documents with fewer than two
    passages are left out, then the first ``limit`` kept."""
    kept = [d for d in documents if len(d) // length >= 2][:limit]
    if len(kept) < 2:
        raise ValueError(
            f"the held-out split has {len(kept)} documents of at least {2 * length} tokens; the "
            "tasks need 2 (env.validation_fraction, env.test_fraction)"
        )
    parts: dict[str, list] = {"train": [], "train_labels": [], "test": [], "test_labels": []}
    for label, doc in enumerate(kept):
        passages = doc[: len(doc) // length * length].reshape(-1, length).astype(np.int64)
        tests = min(max(1, int(round(test_fraction * len(passages)))), len(passages) - 1)
        for split, rows in (("train", passages[:-tests]), ("test", passages[-tests:])):
            parts[split].append(rows)
            parts[f"{split}_labels"].append(np.full(len(rows), label))
    return TaskData(**{k: np.concatenate(v) for k, v in parts.items()}, classes=len(kept))


def span_matches(
    predicted: np.ndarray, targets: np.ndarray, first_sentinel: int, eos: int
) -> tuple[int, int]:
    """``(spans exactly right, spans)`` over rows: a span is right when the prediction has its
    sentinel followed by exactly its tokens (both rows parsed by
    :func:`~sim.training.span_corruption.target_spans`)."""
    right = total = 0
    for guess, truth in zip(predicted, targets, strict=True):
        wanted, got = (target_spans(row, first_sentinel, eos) for row in (truth, guess))
        total += len(wanted)
        right += sum(got.get(k) == v for k, v in wanted.items())
    return right, total


@torch.no_grad()
def greedy_decode(model: Any, inputs: torch.Tensor, length: int, start: int) -> torch.Tensor:
    """``length`` tokens decoded greedily after the start id, ``(batch, length)``."""
    memory = model.encode(inputs)
    out = torch.full((len(inputs), 1), start, dtype=torch.long, device=inputs.device)
    for _ in range(length):
        next_id = model.decode(memory, out)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, next_id], dim=1)
    return out[:, 1:]


def finetune(
    task: str,
    spec: Any,
    vocab: Vocabulary,
    arrays: dict[str, np.ndarray],
    data: TaskData,
    settings: Downstream,
    corruption: tuple[float, float],
    seed: int,
) -> dict[str, float]:
    """Fine-tune the snapshot ``arrays`` (``model/<name>``) on ``task``; its test scores."""
    torch.set_num_threads(1)
    model = spec.build(vocab.size)
    model.load_state_dict({k.removeprefix("model/"): torch.tensor(v) for k, v in arrays.items()})
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    rng = seeding.rng(seed, "finetune", task)
    if task == "documents":
        labels = torch.tensor(data.train_labels)
        head = torch.nn.Linear(spec.width, data.classes)
        torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
        optimizer.add_param_group({"params": head.parameters()})
    for _ in range(settings.steps):
        pick = rng.choice(len(data.train), settings.batch_size, replace=False)
        if task == "documents":
            inputs = torch.tensor(data.train[pick, : model.context])
            loss = F.cross_entropy(classify(model, head, inputs), labels[pick])
        else:
            batch = span_batch(data.train[pick], *corruption, vocab, rng)
            batch = {k: torch.tensor(v) for k, v in batch.items()}
            loss = span_loss(model(batch["inputs"], batch["decoder_inputs"]), batch["targets"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    if task == "documents":
        return {"documents_accuracy": documents_accuracy(model, head, data)}
    return infill_scores(model, vocab, data, corruption)


def classify(model: Any, head: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Class logits: a linear head on the mean of the encoder's outputs."""
    return head(model.encode(inputs).mean(dim=1)).float()


@torch.no_grad()
def documents_accuracy(model: Any, head: torch.nn.Module, data: TaskData, block: int = 64):
    """Accuracy of the classifier on the test passages."""
    right = 0
    for begin in range(0, len(data.test), block):
        inputs = torch.tensor(data.test[begin : begin + block, : model.context])
        logits = classify(model, head, inputs)
        right += int((logits.argmax(-1).numpy() == data.test_labels[begin : begin + block]).sum())
    return right / len(data.test)


@torch.no_grad()
def infill_scores(
    model: Any, vocab: Vocabulary, data: TaskData, corruption: tuple[float, float], block: int = 64
) -> dict[str, float]:
    """Exact match of greedy decoding over the test passages' spans, and the teacher-forced
    loss on their targets."""
    batch = span_batch(data.test, *corruption, vocab, seeding.rng(0, "infill_test"))
    right = total = 0
    loss = 0.0
    for begin in range(0, len(data.test), block):
        part = {k: torch.tensor(v[begin : begin + block]) for k, v in batch.items()}
        targets = part["targets"]
        logits = model(part["inputs"], part["decoder_inputs"])
        loss += float(span_loss(logits, targets)) * targets.numel()
        predicted = greedy_decode(model, part["inputs"], targets.shape[1], vocab.start)
        matched = span_matches(predicted.numpy(), targets.numpy(), vocab.first_sentinel, vocab.eos)
        right, total = right + matched[0], total + matched[1]
    return {"infill_exact_match": right / total, "infill_loss": loss / batch["targets"].size}
