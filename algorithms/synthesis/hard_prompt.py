"""Hard-prompt baselines of SoftSRV (DeSalvo et al., arXiv 2410.16534, Section 5): the frozen LM
prompted with text. ``shots = 0``: a fixed instruction; ``shots > 0``: the instruction followed by
``shots`` target training examples drawn per sample (few-shot), each followed by ``separator``, so
the model continues with a new example."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim import checks


@dataclass
class HardPrompt:
    """A text prompt: ``instruction``, then ``shots`` examples each ended by ``separator``."""

    instruction: str = "# A function from the Python standard library\n"
    shots: int = 0
    separator: str = "\n\n"

    def __post_init__(self) -> None:
        checks.at_least(self, 0, "shots")
        if not self.instruction and not self.shots:
            raise ValueError("instruction: empty, with shots 0 the prompt would be empty")

    def texts(self, examples: Sequence[str], count: int, rng: np.random.Generator) -> list[str]:
        """``count`` prompts; the examples of each are distinct draws from ``examples``."""
        if self.shots > len(examples):
            raise ValueError(f"shots: {self.shots} exceed the {len(examples)} target examples")
        if not self.shots:
            return [self.instruction] * count
        return [
            self.instruction + "".join(examples[i] + self.separator for i in row)
            for row in (rng.choice(len(examples), self.shots, replace=False) for _ in range(count))
        ]
