"""DistillSpec: distilling the draft model towards the target, for speculative decoding.

Zhou, Lyu, Rawat, Menon, Rostamizadeh, Kumar, Kagy, Agarwal, "DistillSpec: Improving Speculative
Decoding via Knowledge Distillation", ICLR 2024 (arXiv 2310.08461). The draft ``q`` is trained to
match the target ``p`` token by token under a divergence ``D(p || q)`` chosen per task, on data
from a chosen source (the fixed corpus, sequences the target generates, or sequences the draft
itself generates: on-policy). Since the acceptance rate of speculative decoding is
``1 - TVD(p, q)`` per position, TVD is the objective the speed-up asks for; the paper finds the
best divergence task-dependent and on-policy data to help. The divergences (forward and reverse
KL, JSD[beta], TVD) are :func:`sim.training.distill.divergence`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from sim import checks, seeding
from sim.interfaces.teacher_student import Generation, SoftLabels
from sim.training.distill import DIVERGENCES, divergence, next_token_loss
from sim.training.speculative import (
    distributions_along,
    expected_speedup,
    plain_generate,
    position_acceptance,
    speculative_generate,
)

DATA_SOURCES = ("fixed", "target", "draft", "mixed")
GENERATED = {"target": ("teacher", 1.0), "draft": ("student", 1.0), "mixed": ("student", 0.5)}


def full_distribution(soft: SoftLabels, vocab_size: int) -> torch.Tensor:
    """The teacher's distribution over the whole vocabulary from its soft labels: scattered from
    the top-k (zero elsewhere), or as served when it sent every token (``indices`` None)."""
    if soft.indices is None:
        return soft.probabilities.float()
    shape = (*soft.probabilities.shape[:-1], vocab_size)
    full = torch.zeros(shape, dtype=torch.float32, device=soft.probabilities.device)
    return full.scatter_(-1, soft.indices, soft.probabilities.float())


@dataclass
class DistillSpec:
    """Train the draft on ``divergence(target || draft)`` (``fkl``, ``rkl``, ``jsd`` with
    ``beta``, ``tvd``; ``none``: next-token loss on the data, the undistilled baseline) over the
    target's full next-token distributions (``protocol.top_k: null``), on ``data``: the corpus
    (``fixed``), sequences the target generates from corpus prompts (``target``), sequences the
    draft generates (``draft``, on-policy), or half corpus and half on-policy (``mixed``);
    generated sequences continue ``prompt_length``-token corpus prompts at
    ``generation_temperature`` and are regenerated every ``refresh`` steps.

    Final measures (``protocol.held_out``), per decoding temperature in ``decode_temperatures``
    (0: greedy) and ``gamma`` in ``gammas``: the exact acceptance rate along the target's own
    output, the block efficiency and the wall-clock speed-up of speculative over plain target
    decoding (measured on this machine, batch 1), the draft/target cost ratio ``c`` and the
    speed-up that ``alpha``, ``gamma`` and ``c`` predict. Each lenience in ``leniences`` adds
    ``alpha`` and the per-gamma measures of lossy speculative decoding
    (:mod:`sim.training.speculative`; keys end in ``_l<lenience>``) along the same plain
    decoding, apart from the lossless ones."""

    divergence: str = "fkl"
    beta: float = 0.5
    data: str = "fixed"
    refresh: int = 20
    prompt_length: int = 16
    generation_temperature: float = 1.0
    temperature: float = 1.0  # of both distributions in the loss (the served one included)
    gammas: list[int] = field(default_factory=lambda: [3, 5, 7])
    decode_temperatures: list[float] = field(default_factory=lambda: [0.0, 1.0])
    leniences: list[float] = field(default_factory=list)  # lossy decoding, measured apart
    # DistillSpec selects no data: not a config field (``algorithm.selection_quantile`` is refused
    # as an unknown key), only the interface's attribute.
    selection_quantile: ClassVar[float | None] = None

    def __post_init__(self) -> None:
        checks.one_of(self, "divergence", (*DIVERGENCES, "none"))
        checks.in_interval(self, 0, 1, "beta", closed=True)
        checks.one_of(self, "data", DATA_SOURCES)
        checks.at_least(self, 1, "refresh", "prompt_length")
        checks.at_least(self, 0, "generation_temperature")
        checks.positive(self, "temperature")
        if not self.gammas or min(self.gammas) < 1:
            raise ValueError(f"gammas: each gamma must be >= 1 (got {list(self.gammas)})")
        if any(not 0 < lenience < 1 for lenience in self.leniences):
            raise ValueError(
                "leniences: each must be in (0, 1) (1, lossless, is always measured; got "
                f"{list(self.leniences)})"
            )
        if not self.decode_temperatures or min(self.decode_temperatures) < 0:
            raise ValueError(
                "decode_temperatures: each must be >= 0, 0 being greedy decoding "
                f"(got {list(self.decode_temperatures)})"
            )

    def generation(self) -> Generation | None:
        if self.data not in GENERATED:
            return None
        source, share = GENERATED[self.data]
        return Generation(
            source, share, self.refresh, self.prompt_length, self.generation_temperature
        )

    def check_steps(self, steps: int) -> None:
        """Any length will do."""

    def teacher_weight(self, step: int, steps: int) -> float:
        return 0.0 if self.divergence == "none" else 1.0  # the target's term alone

    def sequence_scores(self, teacher_logits: torch.Tensor, targets: torch.Tensor) -> None:
        raise NotImplementedError("DistillSpec selects no data")

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, soft: SoftLabels | None, weight: float
    ) -> torch.Tensor:
        if weight == 0:
            return next_token_loss(logits, targets)
        if soft is None:
            raise ValueError("DistillSpec.loss needs the target's distributions")
        p = full_distribution(soft, logits.shape[-1])
        target_logits = torch.log(p.clamp_min(1e-30))
        return divergence(
            self.divergence, target_logits, logits / self.temperature, self.beta
        ).mean()

    def final_measures(
        self, teacher: Any, student: Any, prompts: np.ndarray, new_tokens: int, seed: int
    ) -> dict[str, float]:
        """Speculative decoding with the student as draft (see the class docstring); keys end
        in ``_t<temperature>`` (then ``_l<lenience>`` for a lossy one), the gamma-dependent ones
        have ``_g<gamma>``."""
        rows = [list(map(int, row)) for row in prompts]
        # warm-up: the first calls of each path pay one-time costs that would skew the timing
        speculative_generate(teacher, student, rows[0], min(new_tokens, 8), 2, 0.0, None)
        plain_generate(teacher, rows[0], 2, 0.0, None)
        plain_generate(student, rows[0], 2, 0.0, None)
        measures: dict[str, float] = {}
        for temperature in self.decode_temperatures:
            measures |= decoding_measures(teacher, student, rows, new_tokens, temperature,
                                          self.gammas, seed, (1.0, *self.leniences))  # fmt: skip
        return measures


def _timed(function: Any, *args: Any) -> tuple[Any, float]:
    tick = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - tick


def decoding_measures(
    target: Any,
    draft: Any,
    prompts: list[list[int]],
    new_tokens: int,
    temperature: float,
    gammas: list[int],
    seed: int,
    leniences: Sequence[float] = (1.0,),
) -> dict[str, float]:
    """At one decoding ``temperature`` (0: greedy): plain decoding of every prompt by the target
    (its tokens per second) and by the draft (their time ratio is the cost ratio ``c``); then
    per lenience (1: lossless; below: the lossy variant, keys ending in ``_l<lenience>``) the
    exact acceptance rate along the target's same output, and speculative decoding at each
    gamma: block efficiency, measured and predicted (Leviathan et al., Theorem 3.8) speed-up
    over plain target decoding."""
    tag = f"t{temperature:g}"
    plain_s = draft_s = 0.0
    along: list[tuple[np.ndarray, np.ndarray]] = []
    for i, prompt in enumerate(prompts):
        (out, _), seconds = _timed(
            plain_generate, target, prompt, new_tokens, temperature, seeding.rng(seed, tag, i)
        )
        plain_s += seconds
        draft_s += _timed(
            plain_generate, draft, prompt, new_tokens, temperature, seeding.rng(seed, tag, "d", i)
        )[1]
        along.append(distributions_along(target, draft, prompt + out, len(prompt), temperature))
    cost = draft_s / plain_s
    measures = {f"cost_ratio_{tag}": cost,
                f"target_tokens_per_s_{tag}": len(prompts) * new_tokens / plain_s}  # fmt: skip
    for lenience in leniences:
        lossy = tag if lenience == 1 else f"{tag}_l{lenience:g}"
        rates = [position_acceptance(p, q, temperature, lenience) for p, q in along]
        alpha = float(np.mean(np.concatenate(rates)))
        measures[f"alpha_{lossy}"] = alpha
        for gamma in gammas:
            tokens = calls = 0
            spec_s = 0.0
            for i, prompt in enumerate(prompts):
                (_, stats), seconds = _timed(
                    speculative_generate, target, draft, prompt, new_tokens, gamma, temperature,
                    seeding.rng(seed, lossy, "spec", gamma, i), lenience,
                )  # fmt: skip
                spec_s += seconds
                tokens, calls = tokens + stats.tokens, calls + stats.target_calls
            key = f"g{gamma}_{lossy}"
            measures[f"block_efficiency_{key}"] = tokens / calls
            measures[f"speedup_{key}"] = plain_s / spec_s
            measures[f"predicted_speedup_{key}"] = expected_speedup(alpha, gamma, cost)
    return measures
