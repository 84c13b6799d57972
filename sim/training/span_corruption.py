"""T5's span corruption, as pure functions over token arrays, and its loss.

Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", JMLR 2020 (arXiv 1910.10683), Section 3.1.4; the functions follow the reference
preprocessors of ``google-research/text-to-text-transfer-transformer`` (``t5/data/
preprocessors.py``: ``random_spans_noise_mask``, ``random_spans_helper``,
``noise_span_to_unique_sentinel``, ``nonnoise_span_to_unique_sentinel``). A fraction
``noise_density`` of the tokens, in spans of mean length ``mean_noise_span_length``, is dropped
from the input; each dropped span leaves one sentinel token in its place, and the target lists
the spans, each after its sentinel. Inputs and targets end with ``eos``.

One difference from the reference: sentinel ``k`` is ``first_sentinel + k`` (ids above the text
vocabulary), where T5 counts down from the end of its vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def random_segmentation(items: int, segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths (>= 1, summing to ``items``) of ``segments`` segments, uniformly at random among
    all such splits: ``segments - 1`` distinct cut points among the ``items - 1`` gaps."""
    cuts = np.sort(rng.choice(items - 1, segments - 1, replace=False)) + 1
    return np.diff(np.concatenate([[0], cuts, [items]]))


def noise_counts(length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    """``(noise tokens, noise spans)`` of a sequence of ``length`` (>= 2) tokens, as T5 rounds
    them: at least one noise and one kept token, at least one span, and no more spans than
    either kind of token can fill."""
    noise = int(round(length * noise_density))
    noise = min(max(noise, 1), length - 1)
    spans = max(int(round(noise / mean_span)), 1)
    return noise, min(spans, noise, length - noise)


def random_spans_noise_mask(
    length: int, noise_density: float, mean_span: float, rng: np.random.Generator
) -> np.ndarray:
    """A boolean (length,) mask, True at noise tokens: non-noise and noise spans alternate,
    starting with non-noise, both segmentations uniform at random (T5's
    ``random_spans_noise_mask``)."""
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens (got {length})")
    noise, spans = noise_counts(length, noise_density, mean_span)
    noise_lengths = random_segmentation(noise, spans, rng)
    kept_lengths = random_segmentation(length - noise, spans, rng)
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).ravel()
    return np.repeat(np.tile([False, True], spans), interleaved)


def sentinel_spans(tokens: np.ndarray, drop: np.ndarray, first_sentinel: int) -> np.ndarray:
    """``tokens`` with every run of ``drop`` replaced by one sentinel, numbered in order of the
    runs (T5's ``noise_span_to_unique_sentinel``)."""
    starts = drop & ~np.concatenate([[False], drop[:-1]])
    out = np.where(starts, first_sentinel + np.cumsum(starts) - 1, tokens)
    return out[~drop | starts]


def corrupt(
    tokens: np.ndarray,
    noise_density: float,
    mean_span: float,
    first_sentinel: int,
    eos: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, targets)`` of span corruption: the inputs keep the non-noise tokens with one
    sentinel per noise span; the targets are the noise spans, each after its sentinel; both end
    with ``eos``."""
    noise = random_spans_noise_mask(len(tokens), noise_density, mean_span, rng)
    inputs = sentinel_spans(tokens, noise, first_sentinel)
    targets = sentinel_spans(tokens, ~noise, first_sentinel)
    return np.append(inputs, eos), np.append(targets, eos)


def target_spans(targets: np.ndarray, first_sentinel: int, eos: int) -> dict[int, list[int]]:
    """The spans of a target row: for each sentinel, the tokens after it up to the next sentinel
    (ids >= ``first_sentinel``). A final ``eos`` ends the row; ``eos`` elsewhere is text (a
    window may span a document boundary)."""
    row = targets[:-1] if len(targets) and targets[-1] == eos else targets
    spans: dict[int, list[int]] = {}
    current = None
    for token in row.tolist():
        if token >= first_sentinel:
            current = spans.setdefault(token, [])
        elif current is not None:
            current.append(token)
    return spans


def uncorrupt(inputs: np.ndarray, targets: np.ndarray, first_sentinel: int, eos: int):
    """The original tokens from :func:`corrupt`'s inputs and targets: each sentinel of the inputs
    replaced by the tokens after the same sentinel in the targets."""
    spans = target_spans(targets, first_sentinel, eos)
    out: list[int] = []
    for token in inputs[:-1].tolist():  # the inputs end with eos
        out.extend(spans.get(token, []) if token >= first_sentinel else [token])
    return np.asarray(out, dtype=inputs.dtype)


MAX_RAW_FACTOR = 100  # raw tokens per input token at most (noise_density up to about 0.99)


def input_and_target_lengths(
    inputs_length: int, noise_density: float, mean_span: float
) -> tuple[int, int]:
    """``(tokens_length, targets_length)``: the longest raw length whose corrupted inputs (kept
    tokens + one sentinel per span + eos) fit in ``inputs_length``, and its targets' length
    (noise tokens + sentinels + eos), so that every example has fixed-size inputs and targets
    (T5's ``random_spans_helper``)."""

    def lengths(tokens: int) -> tuple[int, int]:
        noise, spans = noise_counts(tokens, noise_density, mean_span)  # as corrupt() counts
        return tokens - noise + spans + 1, noise + spans + 1

    tokens, most = inputs_length, MAX_RAW_FACTOR * inputs_length
    while lengths(tokens + 1)[0] <= inputs_length:
        tokens += 1
        if tokens > most:  # a density near 1 keeps almost nothing: the scan would not end
            raise ValueError(
                f"noise_density: {noise_density} keeps so few tokens that inputs of "
                f"{inputs_length} would need more than {most} raw tokens per example"
            )
    targets = lengths(tokens)[1]
    if noise_density == 0.5 and targets > lengths(tokens)[0]:
        tokens, targets = tokens - 1, targets - 1
    return tokens, targets


@dataclass(frozen=True)
class Vocabulary:
    """The ids an encoder-decoder pre-trained by span corruption uses: the corpus's ``text``
    ids (``eos`` among them: the corpus's end-of-text, 0), then ``sentinels`` sentinel ids, the
    decoder's start id and a mask id (SpacTor's generator input)."""

    text: int
    sentinels: int
    eos: int = 0

    @property
    def first_sentinel(self) -> int:
        return self.text

    @property
    def start(self) -> int:
        return self.text + self.sentinels

    @property
    def mask(self) -> int:
        return self.start + 1

    @property
    def size(self) -> int:
        return self.mask + 1


def decoder_inputs(targets: np.ndarray, start: int) -> np.ndarray:
    """Teacher forcing: the targets shifted right by one, after the start id."""
    return np.concatenate([np.full((len(targets), 1), start, targets.dtype), targets[:, :-1]], 1)


def span_batch(
    rows: np.ndarray,
    noise_density: float,
    mean_span: float,
    vocab: Vocabulary,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Span-corrupted examples from raw token ``rows`` (batch, raw tokens): ``inputs``,
    ``targets`` and ``decoder_inputs``, int64, one row per example."""
    pairs = [
        corrupt(row, noise_density, mean_span, vocab.first_sentinel, vocab.eos, rng) for row in rows
    ]
    targets = np.stack([p[1] for p in pairs]).astype(np.int64)
    return {
        "inputs": np.stack([p[0] for p in pairs]).astype(np.int64),
        "targets": targets,
        "decoder_inputs": decoder_inputs(targets, vocab.start),
    }


def span_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the decoder's logits ``(batch, T, vocab)`` against ``targets``."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
