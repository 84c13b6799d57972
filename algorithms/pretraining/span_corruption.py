"""Span-corruption pre-training (T5), the plain objective of ``protocol=pretraining``.

Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", JMLR 2020 (arXiv 1910.10683), Section 3.1.4. The corruption itself, shared with
the protocol's validation loss and infilling task, is :mod:`sim.training.span_corruption`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sim import checks
from sim.training.span_corruption import (
    Vocabulary,
    input_and_target_lengths,
    noise_counts,
    span_batch,
    span_loss,
)


@dataclass
class SpanCorruption:
    """Plain span-corruption pre-training (T5; the SpacTor paper's baseline): the decoder
    predicts the dropped spans, cross-entropy averaged over the target tokens."""

    noise_density: float = 0.15
    mean_span: float = 3.0

    def __post_init__(self) -> None:
        if not 0 < self.noise_density < 1:  # none or all noise: nothing to corrupt or to keep
            raise ValueError(f"noise_density: must be in (0, 1) (got {self.noise_density})")
        checks.at_least(self, 1, "mean_span")

    def lengths(self, inputs_length: int) -> tuple[int, int, int, int]:
        """``(raw tokens, inputs, targets, sentinels)`` per example: the most raw tokens whose
        corrupted inputs fit in ``inputs_length``, and the lengths they corrupt into."""
        raw, targets = input_and_target_lengths(inputs_length, self.noise_density, self.mean_span)
        noise, spans = noise_counts(raw, self.noise_density, self.mean_span)
        return raw, raw - noise + spans + 1, targets, spans

    def check_steps(self, steps: int) -> None:
        """Any number of steps will do."""

    def auxiliary(self, spec: Any, vocab: Vocabulary) -> torch.nn.Module | None:
        """Modules trained beside the encoder-decoder (none)."""
        return None

    def batch(
        self, rows: np.ndarray, vocab: Vocabulary, step: int, steps: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """The step's corrupted examples (:func:`span_batch`)."""
        return span_batch(rows, self.noise_density, self.mean_span, vocab, rng)

    def loss(
        self, model: Any, auxiliary: Any, batch: dict[str, torch.Tensor], step: int, steps: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective and its named parts (``sc_loss``)."""
        sc = span_loss(model(batch["inputs"], batch["decoder_inputs"]), batch["targets"])
        return sc, {"sc_loss": sc.detach()}

    def step_flops(self, spec: Any, vocab: Vocabulary, inputs_length: int, step: int, steps: int):
        """Training FLOPs of one example at ``step``: 3x the forward pass (the backward pass
        costs twice the forward; Kaplan et al. 2020, Section 2.1)."""
        _, inputs, targets, _ = self.lengths(inputs_length)
        return 3 * spec.forward_flops(vocab.size, inputs, targets)
