"""The convolutional network of ``model=cnn`` (McMahan et al., AISTATS 2017); torch is imported by
``build`` only: a driver checks the spec against the input (``check``) without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING

from sim import checks

if TYPE_CHECKING:
    from torch import nn


@dataclass
class CNN:
    """The CNN of McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017: per entry of ``channels`` a 5x5 convolution (padding 2),
    ReLU and 2x2 max-pooling; then a ReLU fully connected layer of ``hidden`` units and the output.
    """

    channels: list[int] = field(default_factory=lambda: [32, 64])
    hidden: int = 512

    def __post_init__(self) -> None:
        if not self.channels or any(width < 1 for width in self.channels):
            raise ValueError(f"channels: must be non-empty, each >= 1 (got {list(self.channels)})")
        checks.at_least(self, 1, "hidden")

    def check(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        """Refuse an input that is not an image large enough for the poolings."""
        if len(input_shape) != 3:
            raise ValueError(f"input_shape: CNN needs (C, H, W) (got {tuple(input_shape)})")
        _, height, width = input_shape
        depth = len(self.channels)
        if height >> depth < 1 or width >> depth < 1:
            raise ValueError(
                f"input_shape: {depth} poolings leave no pixels of {height}x{width} "
                f"(got {tuple(input_shape)})"
            )

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        from torch import nn

        self.check(input_shape, num_classes)
        in_channels, height, width = input_shape
        depth = len(self.channels)
        layers: list[nn.Module] = []
        for c_in, c_out in pairwise([in_channels, *self.channels]):
            layers += [nn.Conv2d(c_in, c_out, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
        flat = self.channels[-1] * (height >> depth) * (width >> depth)
        layers += [nn.Flatten(), nn.Linear(flat, self.hidden), nn.ReLU()]
        layers.append(nn.Linear(self.hidden, num_classes))
        return nn.Sequential(*layers)
