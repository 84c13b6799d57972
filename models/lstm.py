"""The character LSTM of ``model=lstm``: LEAF's Shakespeare model (Caldas et al., arXiv
1812.01097; github.com/TalwalkarLab/leaf ``models/shakespeare/stacked_lstm.py``): an 8-dim
letter embedding, two LSTM layers of 256 units, and a dense layer from the last step's output to
the next letter's logits. torch is imported by ``build`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sim import checks

if TYPE_CHECKING:
    from torch import nn


@dataclass
class CharLSTM:
    """Embedding(num_classes, embed_dim) -> LSTM(hidden, layers) -> Linear(hidden, num_classes)
    on the last time step: one next-letter prediction per window of letter indices."""

    embed_dim: int = 8
    hidden: int = 256
    layers: int = 2

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "embed_dim", "hidden", "layers")

    def check(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        """Refuse inputs that are not 1-D windows of letter indices."""
        if len(input_shape) != 1 or input_shape[0] < 1:
            raise ValueError(
                f"input_shape: lstm needs 1-D windows of letter indices (got {tuple(input_shape)})"
            )

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        import torch
        from torch import nn

        self.check(input_shape, num_classes)

        class Net(nn.Module):
            def __init__(self, spec: CharLSTM) -> None:
                super().__init__()
                self.embed = nn.Embedding(num_classes, spec.embed_dim)
                self.lstm = nn.LSTM(spec.embed_dim, spec.hidden, spec.layers, batch_first=True)
                self.out = nn.Linear(spec.hidden, num_classes)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                outputs, _ = self.lstm(self.embed(x))
                return self.out(outputs[:, -1])

        return Net(self)
