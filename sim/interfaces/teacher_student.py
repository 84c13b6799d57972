"""The teacher-student plug-ins: a student algorithm (how the student's loss uses the teacher,
step by step) and the teacher's answers it receives.

The protocol asks the teacher only at steps where ``teacher_weight(step, steps) > 0``, for the
top-``k`` next-token distribution at the algorithm's ``temperature`` (:class:`SoftLabels`), and
hands them to ``loss``. An algorithm with a ``selection_quantile`` has the teacher actor score
every training sequence once with its ``sequence_scores(teacher_logits, targets)`` (SALT_DS in
``algorithms/salt.py``); the steps that use the teacher then draw their sequences from those
scoring at or above that quantile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TextEnvironment(Protocol):
    """A corpus env (``conf/env/text.yaml``): its token streams (``envs.text.TokenStreams``)."""

    def token_streams(self) -> Any: ...


@runtime_checkable
class LanguageModelSpec(Protocol):
    """A language model's shape (``conf/model/gpt.yaml``): ``build(vocab_size)`` returns a
    module mapping ``(batch, length)`` ids to ``(batch, length, vocab)`` logits."""

    context: int

    def build(self, vocab_size: int) -> Any: ...


@dataclass(frozen=True)
class SoftLabels:
    """The teacher's top-``k`` next-token distribution per position, renormalised over the k:
    ``indices`` (batch, length, k) int64 token ids and ``probabilities`` (batch, length, k)
    float32 rows summing to 1 (numpy arrays, or torch tensors once on the student's device)."""

    indices: Any
    probabilities: Any


@runtime_checkable
class StudentAlgorithm(Protocol):
    """What a teacher-student algorithm implements (a dataclass; its fields its config)."""

    temperature: float
    selection_quantile: float | None

    def check_steps(self, steps: int) -> None:
        """Raise ``ValueError("field: why")`` if the algorithm cannot run ``steps`` steps."""
        ...

    def teacher_weight(self, step: int, steps: int) -> float:
        """The weight of the teacher's term at ``step`` (0-based) of ``steps``; 0: not asked."""
        ...

    def sequence_scores(self, teacher_logits: Any, targets: Any) -> Any:
        """One score per sequence (used when ``selection_quantile`` is set)."""
        ...

    def loss(self, logits: Any, targets: Any, soft: SoftLabels | None, weight: float) -> Any:
        """The student's scalar loss from its ``(batch, length, vocab)`` logits, the true next
        tokens ``(batch, length)`` and, when ``weight > 0``, the teacher's soft labels."""
        ...
