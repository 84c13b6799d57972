"""SpacTor's input corruption and its two-stage objective.

Ye et al., "SpacTor-T5: Pre-training T5 Models with Span Corruption and Replaced Token
Detection", arXiv 2401.13160. An example is first span-corrupted as in T5
(:mod:`sim.training.span_corruption`); then a fraction of the kept (non-sentinel) input tokens is
masked, a small generator (an MLM) predicts them, and its samples replace them (ELECTRA, Clark
et al., ICLR 2020). The encoder reads the result: the decoder still predicts the spans (SC), and a
head on the encoder marks each token original or replaced (RTD). A token the generator happened to
sample right counts as original, as in ELECTRA. For the first ``tau`` steps the loss is
``SC + lambda1 RTD + lambda2 MLM``; from step ``tau`` on it is SC alone (the two-stage curriculum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algorithms.pretraining.span_corruption import SpanCorruption
from models.t5 import EncoderBlock, encoder_flops
from sim import checks
from sim.training.span_corruption import Vocabulary, span_loss


def mask_for_generator(
    inputs: np.ndarray, rate: float, first_sentinel: int, eos: int, rng: np.random.Generator
) -> np.ndarray:
    """Positions (a bool mask over ``inputs``) the generator fills: ``round(rate * m)`` of the
    ``m`` text tokens (not sentinels, not eos), uniformly at random, at least one if any."""
    text = np.flatnonzero((inputs < first_sentinel) & (inputs != eos))
    count = min(max(int(round(rate * len(text))), 1), len(text))
    mask = np.zeros(len(inputs), bool)
    mask[rng.choice(text, count, replace=False)] = True
    return mask


def replace_tokens(inputs: Any, mask: Any, samples: Any) -> Any:
    """``inputs`` with the generator's ``samples`` (one per masked position, in order) put at
    the ``mask`` positions (numpy arrays or torch tensors)."""
    out = inputs.clone() if isinstance(inputs, torch.Tensor) else inputs.copy()
    out[mask] = samples
    return out


def rtd_labels(original: Any, corrupted: Any) -> Any:
    """True where the encoder's input token differs from the span-corrupted input it replaced
    (sentinels and correctly sampled tokens are originals); numpy arrays or torch tensors."""
    return original != corrupted


def loss_weights(step: int, tau: int, rtd_weight: float, mlm_weight: float):
    """``(SC, RTD, MLM)`` weights of the loss at ``step`` (counted from 0): ``(1, lambda1,
    lambda2)`` before ``tau``, ``(1, 0, 0)`` from ``tau`` on. ``tau`` = the total steps is the
    hybrid without the switch; ``tau`` = 0 is plain span corruption."""
    if step < 0 or tau < 0:
        raise ValueError(f"step and tau must be >= 0 (got {step}, {tau})")
    return (1.0, rtd_weight, mlm_weight) if step < tau else (1.0, 0.0, 0.0)


def hybrid_loss(
    sc: float, rtd: float, mlm: float, step: int, tau: int, rtd_weight: float, mlm_weight: float
) -> float:
    """``SC + lambda1 RTD + lambda2 MLM`` before ``tau``, ``SC`` after (works on tensors too)."""
    w_sc, w_rtd, w_mlm = loss_weights(step, tau, rtd_weight, mlm_weight)
    return w_sc * sc + w_rtd * rtd + w_mlm * mlm


class MaskedLM(nn.Module):
    """SpacTor's generator: a bidirectional encoder (the T5 encoder's blocks, narrower) whose
    output layer, tied to its own input embedding, predicts text ids only (the first ``text``
    rows). Departure: ELECTRA shares the token embedding between generator and discriminator;
    here the generator has its own, of its own width."""

    def __init__(self, vocab: Vocabulary, context: int, layers: int, width: int, heads: int):
        super().__init__()
        self.text = vocab.text
        self.embed = nn.Embedding(vocab.size, width)
        self.position = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, inputs: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Logits over the text ids ``(masked, text)`` at the positions ``at`` (a bool mask)."""
        x = self.embed(inputs) + self.position(torch.arange(inputs.shape[1], device=inputs.device))
        for block in self.blocks:
            x = block(x, None)
        return self.ln(x)[at] @ self.embed.weight[: self.text].T


def sample(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One id per row of ``logits``, by inverting the softmax's CDF at ``uniforms`` (drawn on the
    whole batch in numpy: the samples do not depend on how the batch is split over workers)."""
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(-1)
    ids = torch.searchsorted(cdf, uniforms.float().unsqueeze(-1), right=True).squeeze(-1)
    return ids.clamp(max=logits.shape[-1] - 1)


@dataclass
class SpacTor(SpanCorruption):
    """SpacTor: for the first ``tau`` steps the hybrid loss ``SC + rtd_weight RTD + mlm_weight
    MLM`` (module docstring), then SC alone; ``tau=None`` is the hybrid without the switch. The
    generator masks ``mask_rate`` of the text tokens of each span-corrupted input; it has
    ``generator_layers`` blocks (None: the encoder's) of ``generator_scale`` times the encoder's
    width and heads. [recalled] Defaults: ELECTRA's ``rtd_weight = 50`` and 15% masking, a
    generator a quarter of the width; tau = 150, a quarter of ``experiment=spactor``'s 600 steps
    (the paper's tau is 120K or 250K of 1M steps) — set them per experiment. tau counts steps, so
    the model at step s of a run is the model of a run of s steps."""

    tau: int | None = 150
    rtd_weight: float = 50.0
    mlm_weight: float = 1.0
    mask_rate: float = 0.15
    generator_scale: float = 0.25
    generator_layers: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.at_least(self, 0, "tau", optional=True)
        checks.at_least(self, 0, "rtd_weight", "mlm_weight")
        checks.positive(self, "mask_rate")
        checks.in_interval(self, 0, 1, "mask_rate", "generator_scale", closed=True)
        checks.at_least(self, 1, "generator_layers", optional=True)

    def check_steps(self, steps: int) -> None:
        if self.tau is not None and self.tau > steps:
            raise ValueError(
                f"tau: {self.tau} is beyond the run's {steps} steps (tau=null: no switch)"
            )

    def tau_steps(self, steps: int) -> int:
        return steps if self.tau is None else self.tau

    def hybrid(self, step: int, steps: int) -> bool:
        return step < self.tau_steps(steps)

    def generator_shape(self, spec: Any) -> tuple[int, int, int]:
        """``(layers, width, heads)`` of the generator."""
        heads = max(1, round(spec.heads * self.generator_scale))
        width = round(spec.width * self.generator_scale / heads) * heads
        if width < heads:
            raise ValueError(
                f"generator_scale: {self.generator_scale} of width {spec.width} leaves no width"
            )
        return self.generator_layers or spec.layers, width, heads

    def auxiliary(self, spec: Any, vocab: Vocabulary) -> nn.Module:
        """The generator and the replaced-token-detection head (a linear layer on the encoder)."""
        layers, width, heads = self.generator_shape(spec)
        return nn.ModuleDict(
            {
                "generator": MaskedLM(vocab, spec.context, layers, width, heads),
                "rtd_head": nn.Linear(spec.width, 1),
            }
        )

    def batch(
        self, rows: np.ndarray, vocab: Vocabulary, step: int, steps: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Span corruption's arrays and, in the hybrid stage, the generator's: its ``mask``
        (bool), its ``generator_inputs`` (masked positions set to the mask id), one uniform
        draw per position for its samples, and ``masked_per_row``, the batch's masked positions
        over its rows (the same in every row: each worker's share of the MLM loss is then a
        share of the whole batch's mean, whatever the split)."""
        batch = super().batch(rows, vocab, step, steps, rng)
        if self.hybrid(step, steps):
            inputs = batch["inputs"]
            mask = np.stack(
                [
                    mask_for_generator(row, self.mask_rate, vocab.first_sentinel, vocab.eos, rng)
                    for row in inputs
                ]
            )
            batch.update(
                mask=mask,
                generator_inputs=np.where(mask, vocab.mask, inputs),
                uniforms=rng.random(inputs.shape, dtype=np.float32),
                masked_per_row=np.full(len(inputs), mask.sum() / len(inputs), np.float32),
            )
        return batch

    def loss(
        self, model: Any, auxiliary: Any, batch: dict[str, torch.Tensor], step: int, steps: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.hybrid(step, steps):
            return super().loss(model, auxiliary, batch, step, steps)
        inputs, mask = batch["inputs"], batch["mask"]
        generated = auxiliary["generator"](batch["generator_inputs"], mask)
        mlm = F.cross_entropy(generated.float(), inputs[mask], reduction="sum")
        mlm = mlm / (batch["masked_per_row"][0] * len(inputs))
        with torch.no_grad():
            replaced = replace_tokens(inputs, mask, sample(generated, batch["uniforms"][mask]))
            labels = rtd_labels(inputs, replaced).float()
        memory = model.encode(replaced)
        detected = auxiliary["rtd_head"](memory).squeeze(-1)
        rtd = F.binary_cross_entropy_with_logits(detected.float(), labels)
        sc = span_loss(model.decode(memory, batch["decoder_inputs"]), batch["targets"])
        total = hybrid_loss(sc, rtd, mlm, step, self.tau_steps(steps), self.rtd_weight,
                            self.mlm_weight)  # fmt: skip
        with torch.no_grad():
            accuracy = ((detected > 0).float() == labels).float().mean()
        return total, {
            "sc_loss": sc.detach(),
            "rtd_loss": rtd.detach(),
            "mlm_loss": mlm.detach(),
            "replaced_fraction": labels.mean(),
            "rtd_accuracy": accuracy,
        }

    def step_flops(self, spec: Any, vocab: Vocabulary, inputs_length: int, step: int, steps: int):
        """SC's FLOPs, and in the hybrid stage also the generator's (its blocks over the input,
        its output layer at the masked positions) and the RTD head's, each 3x the forward."""
        flops = super().step_flops(spec, vocab, inputs_length, step, steps)
        if not self.hybrid(step, steps):
            return flops
        _, inputs, _, spans = self.lengths(inputs_length)
        text = inputs - spans - 1  # kept tokens: the input less its sentinels and eos
        masked = min(max(round(self.mask_rate * text), 1), text)
        layers, width, _ = self.generator_shape(spec)
        generator = encoder_flops(width, layers, inputs) + 2.0 * vocab.text * width * masked
        return flops + 3 * (generator + 2.0 * spec.width * inputs)
