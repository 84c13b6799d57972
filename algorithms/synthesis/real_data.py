"""The reference of the synthetic-data protocol: real target training examples in place of
synthetic ones (what MAUVE and the downstream model reach with the real thing)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class RealData:
    """``count`` distinct target training examples, drawn uniformly."""

    def samples(self, examples: Sequence[str], count: int, rng: np.random.Generator) -> list[str]:
        if count > len(examples):
            raise ValueError(f"{count} samples exceed the {len(examples)} target examples")
        return [examples[i] for i in rng.choice(len(examples), count, replace=False)]
