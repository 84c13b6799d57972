"""The teacher-student plug-ins: a student algorithm (how the student's loss uses the teacher,
step by step) and the teacher's answers it receives.

The protocol asks the teacher only at steps where ``teacher_weight(step, steps) > 0``, for the
top-``k`` next-token distribution at the algorithm's ``temperature`` (:class:`SoftLabels`), and
hands them to ``loss``. An algorithm with a ``selection_quantile`` has the teacher actor score
every training sequence once with its ``sequence_scores(teacher_logits, targets)`` (SALT_DS
in ``algorithms/teacher_student/salt.py``); the steps that use the teacher then draw their
sequences from those scoring at or above that quantile. An algorithm whose ``generation()`` is
a :class:`Generation` trains partly or wholly on sequences a model generates (DistillSpec's
target- or draft-generated data); its ``final_measures`` are taken on the finished student
(DistillSpec: speculative decoding with the student as draft and the teacher as target).
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
    float32 rows summing to 1 (numpy arrays, or torch tensors once on the student's device).
    With ``indices`` None, ``probabilities`` is the whole distribution (batch, length, vocab)."""

    indices: Any
    probabilities: Any


GENERATORS = ("teacher", "student")


@dataclass(frozen=True)
class Generation:
    """Generated training data: a ``share`` of every batch (1: all of it) is sequences that
    continue ``prompt_length``-token corpus prompts to the run's window length, sampled from
    the ``source`` model (``teacher``, or the student itself: on-policy) at ``temperature``
    (0: greedy), generated anew every ``refresh`` steps for the next ``refresh`` steps."""

    source: str
    share: float
    refresh: int
    prompt_length: int
    temperature: float


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

    def generation(self) -> Generation | None:
        """Where generated training sequences come from; None: the corpus alone."""
        ...

    def final_measures(
        self, teacher: Any, student: Any, prompts: Any, new_tokens: int, seed: int
    ) -> dict[str, float]:
        """Measures of the finished student against the teacher (both eval-mode modules) on
        ``prompts`` ``(n, prompt_length)`` held-out token ids continued by ``new_tokens``;
        ``{}``: none. The protocol runs it as Ray tasks over chunks of the prompts and averages
        the chunks' values (weighted by their prompts)."""
        ...
