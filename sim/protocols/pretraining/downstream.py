"""Downstream proxy tasks: a pre-trained encoder-decoder fine-tuned on held-out documents.

The held-out documents are the corpus's validation and test splits (never trained on in
pre-training); each is cut into consecutive passages of the pre-training example's raw length,
and a document's first ``1 - test_fraction`` of passages are the task's training data, the rest
its test data. Tasks, text-to-text as in T5:

- ``documents``: which held-out document (for Shakespeare, which play) a passage comes from.
- ``speaker``: which speaking role says a speech (Shakespeare's plays only): the first
  ``speech_tokens`` tokens of every speech at least that long, whose role is one of its play's
  ``speakers`` most frequent (by such speeches); a class is a (play, role) (5 held-out plays x 3
  roles: 15 classes), a role's first ``1 - test_fraction`` of speeches train, the rest test.
- ``follows``: whether passage half B follows half A: a passage's first half, a separator (the
  first sentinel), then its own second half (label 1) or another passage's second half (label
  0; of the same document when it has another passage in the split, else of another), half of
  each, drawn once, the same
  for every run (stream ``(0, "follows", split)``).
- The three are classifications: a linear head (zero-initialised) on the mean of the encoder's
  outputs over the input (at most ``model.context`` tokens), trained with the whole model.
  Score: ``<task>_accuracy`` on the test inputs.
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
from sim.training.plays import is_play, speeches
from sim.training.span_corruption import Vocabulary, span_batch, span_loss, target_spans

CLASSIFICATIONS = ("documents", "speaker", "follows")
TASKS = (*CLASSIFICATIONS, "infill")
SCORES = (*(f"{task}_accuracy" for task in CLASSIFICATIONS), "infill_exact_match", "infill_loss")


@dataclass
class Downstream:
    """Which snapshots are fine-tuned (``at``: fractions of the pre-training steps), on which
    ``tasks``, with what budget; ``documents``: at most this many held-out documents (None: all);
    ``speakers`` roles per play and ``speech_tokens`` tokens per speech for ``speaker``."""

    at: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    steps: int = 100
    batch_size: int = 32
    lr: float = 3e-4
    test_fraction: float = 0.2
    documents: int | None = None
    speakers: int = 3
    speech_tokens: int = 32

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "steps", "batch_size", "speakers", "speech_tokens")
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
    """A task's inputs ``(n, tokens)`` and their labels (for ``documents`` and ``infill``:
    passages and their documents), split into train and test."""

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
    passages = [d[: len(d) // length * length].reshape(-1, length) for d in kept]
    return labelled(passages, test_fraction, "documents")


def labelled(inputs: list[np.ndarray], test_fraction: float, what: str) -> TaskData:
    """Class ``c``'s inputs ``inputs[c]`` (rows in order): its first ``1 - test_fraction`` for
    training and the rest for testing (at least one of each; every class needs two rows)."""
    if len(inputs) < 2 or any(len(rows) < 2 for rows in inputs):
        raise ValueError(f"{what}: the tasks need 2 classes of at least 2 inputs each")
    parts: dict[str, list] = {"train": [], "train_labels": [], "test": [], "test_labels": []}
    for label, rows in enumerate(inputs):
        tests = min(max(1, int(round(test_fraction * len(rows)))), len(rows) - 1)
        for split, part in (("train", rows[:-tests]), ("test", rows[-tests:])):
            parts[split].append(np.asarray(part, dtype=np.int64))
            parts[f"{split}_labels"].append(np.full(len(part), label))
    return TaskData(**{k: np.concatenate(v) for k, v in parts.items()}, classes=len(inputs))


def speaker_data(
    texts: list[str], encode: Any, speakers: int, length: int, test_fraction: float
) -> TaskData:
    """The ``speaker`` task of the plays among ``texts``: the first ``length`` tokens
    (``encode(text) -> ids``) of each speech of at least that many, for each play's
    ``speakers`` roles with the most such speeches (ties: the first to give one)."""
    classes: list[np.ndarray] = []
    for text in filter(is_play, texts):
        by_role: dict[str, list[np.ndarray]] = {}
        for role, lines in speeches(text):
            ids = encode("\n".join(lines))
            if len(ids) >= length:
                by_role.setdefault(role, []).append(np.asarray(ids[:length]))
        ranked = sorted(by_role, key=lambda role: -len(by_role[role]))  # ties: first to speak one
        classes += [np.stack(by_role[role]) for role in ranked[:speakers]]
    what = (
        f"speaker: speeches of at least {length} tokens in the held-out plays (Shakespeare's; "
        "a corpus without plays: leave speaker out of protocol.downstream.tasks)"
    )
    return labelled(classes, test_fraction, what)


def follows_data(data: TaskData, length: int, separator: int) -> TaskData:
    """The ``follows`` task from ``data``'s passages (its documents' labels): a passage's first
    ``(length - 1) // 2`` tokens, ``separator``, then the next as many of its own (label 1) or of
    another passage (label 0: of the same document and split when it has another)."""
    half = (length - 1) // 2
    if half < 1 or 2 * half > data.train.shape[1]:
        raise ValueError(f"follows: passages of {data.train.shape[1]} tokens, inputs of {length}")
    splits = {}
    for split in ("train", "test"):
        passages, documents = getattr(data, split), getattr(data, f"{split}_labels")
        rng = seeding.rng(0, "follows", split)
        labels = rng.permutation(len(passages)) % 2
        seconds = passages[:, half : 2 * half].copy()
        for i in np.flatnonzero(labels == 0):
            same = np.flatnonzero(documents == documents[i])
            others = np.setdiff1d(same if len(same) > 1 else np.arange(len(passages)), [i])
            seconds[i] = passages[rng.choice(others), half : 2 * half]
        joined = np.concatenate(
            [passages[:, :half], np.full((len(passages), 1), separator), seconds], axis=1
        )
        splits[split], splits[f"{split}_labels"] = joined.astype(np.int64), labels
    return TaskData(**splits, classes=2)


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
    """Fine-tune the snapshot ``arrays`` (``model/<name>``) on ``task`` (its ``data``); its
    test scores."""
    torch.set_num_threads(1)
    model = spec.build(vocab.size)
    model.load_state_dict({k.removeprefix("model/"): torch.tensor(v) for k, v in arrays.items()})
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    rng = seeding.rng(seed, "finetune", task)
    classifying = task in CLASSIFICATIONS
    if classifying:
        labels = torch.tensor(data.train_labels)
        head = torch.nn.Linear(spec.width, data.classes)
        torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
        optimizer.add_param_group({"params": head.parameters()})
    for _ in range(settings.steps):
        pick = rng.choice(len(data.train), settings.batch_size, replace=False)
        if classifying:
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
    if classifying:
        return {f"{task}_accuracy": accuracy(model, head, data)}
    return infill_scores(model, vocab, data, corruption)


def classify(model: Any, head: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Class logits: a linear head on the mean of the encoder's outputs."""
    return head(model.encode(inputs).mean(dim=1)).float()


@torch.no_grad()
def accuracy(model: Any, head: torch.nn.Module, data: TaskData, block: int = 64) -> float:
    """Accuracy of the classifier on the test inputs."""
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
