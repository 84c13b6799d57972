"""The pre-training plug-ins: an encoder-decoder's shape and the objective it is trained by.

The protocol (``protocol=pretraining``) draws each step's raw token windows, has the objective
turn them into the step's arrays (``batch``: numpy, on the whole global batch, from the stream
``(seed, "corruption", step)``, so any number of workers sees the same examples), shards them,
and minimises the objective's ``loss``. The objective may train modules of its own beside the
model (``auxiliary``: SpacTor's generator and detection head); only the encoder-decoder is kept
for fine-tuning. Span corruption (``algorithms/pretraining/span_corruption.py``) is the plain
objective and the one the validation loss and the infilling task use.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class EncoderDecoderSpec(Protocol):
    """An encoder-decoder's shape (``conf/model/t5.yaml``): ``build(vocab_size)`` returns a
    module with ``encode(inputs)``, ``decode(memory, decoder_inputs)`` and ``forward(inputs,
    decoder_inputs)``; ``forward_flops`` counts one example's forward pass."""

    context: int
    width: int
    heads: int
    layers: int

    def build(self, vocab_size: int) -> Any: ...

    def forward_flops(self, vocab_size: int, inputs: int, targets: int) -> float: ...


@runtime_checkable
class PretrainingObjective(Protocol):
    """What a pre-training objective implements (a dataclass; its fields its config)."""

    noise_density: float
    mean_span: float

    def lengths(self, inputs_length: int) -> tuple[int, int, int, int]:
        """``(raw tokens, inputs, targets, sentinels)`` of one example."""
        ...

    def check_steps(self, steps: int) -> None:
        """Raise ``ValueError("field: why")`` if the objective cannot run ``steps`` steps."""
        ...

    def auxiliary(self, spec: Any, vocab: Any) -> Any:
        """Modules trained beside the model (a ``torch.nn.Module``), or None."""
        ...

    def batch(
        self, rows: np.ndarray, vocab: Any, step: int, steps: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """The step's arrays (one row per example) from raw token ``rows``."""
        ...

    def loss(self, model: Any, auxiliary: Any, batch: dict[str, Any], step: int, steps: int):
        """``(scalar loss, {name: scalar tensor})`` on this worker's share of the batch."""
        ...

    def step_flops(self, spec: Any, vocab: Any, inputs_length: int, step: int, steps: int):
        """Training FLOPs of one example at ``step``."""
        ...
