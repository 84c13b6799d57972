"""Linear models (``model=logistic``, ``model=linear``): dataclasses whose ``build(input_shape,
num_classes)`` returns a fresh module; torch is imported by ``build`` only, PyTorch's default
initialisation, the caller seeds torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass
class LogisticRegression:
    """Multinomial logistic regression: flatten, then one linear layer (softmax in the loss)."""

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        from torch import nn

        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


@dataclass
class LinearRegression:
    """``f(x) = w^T x`` (no bias by default, so the flat parameters are ``w``)."""

    bias: bool = False

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        from torch import nn

        return nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes, self.bias)
        )
