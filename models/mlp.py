"""The fully connected network of ``model=mlp`` (the "2NN" of McMahan et al., AISTATS 2017, by
default); torch is imported by ``build`` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass
class MLP:
    """Fully connected ReLU network; the default is the "2NN" of McMahan et al. (AISTATS 2017)."""

    hidden: list[int] = field(default_factory=lambda: [200, 200])

    def __post_init__(self) -> None:
        if any(width < 1 for width in self.hidden):
            raise ValueError(f"hidden: widths must be >= 1 (got {list(self.hidden)})")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        from torch import nn

        widths = [math.prod(input_shape), *self.hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        return nn.Sequential(*layers)
