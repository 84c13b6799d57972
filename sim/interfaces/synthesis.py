"""The synthetic-data plug-ins (``protocol=synthesis``): a frozen generator, a target domain,
and a method that prompts the generator (or, as a reference, stands in for it).

A method is one of three kinds, told apart by what it implements:

- :class:`SoftPromptMethod` (``algorithms/synthesis/softsrv.py``): a prompt module trained
  on the target examples through the frozen model; each sample is generated behind the module's
  prompt for the embedding of a drawn target example.
- :class:`HardPromptMethod` (``algorithms/synthesis/hard_prompt.py``): text prompts.
- :class:`ReferenceMethod` (``algorithms/synthesis/real_data.py``): samples without the generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class FrozenLMSpec(Protocol):
    """A pretrained causal LM (``conf/model/smollm2.yaml``): ``load()`` gives ``(model,
    tokenizer)`` (transformers), ``locate()`` raises FileNotFoundError if it is not installed."""

    context: int
    width: int

    def locate(self) -> Any: ...

    def load(self) -> tuple[Any, Any]: ...

    def tokenizer(self) -> Any:
        """The tokenizer alone (after a first ``load``)."""
        ...


@runtime_checkable
class TargetDomain(Protocol):
    """A target domain (``env=target_text``): ``examples()`` gives ``.train`` and ``.held_out``
    lists of texts; ``cache_folder()`` is where what is derived from them may be cached."""

    def locate(self) -> None: ...

    def examples(self) -> Any: ...

    def cache_folder(self) -> Path: ...


@runtime_checkable
class SoftPromptMethod(Protocol):
    tokens: int
    featurizer: str

    @property
    def uses_features(self) -> bool: ...

    def build(self, width: int, features: int, scale: float) -> Any:
        """A ``torch.nn.Module``: ``module(features | None, count) -> [count, tokens, width]``."""
        ...


@runtime_checkable
class HardPromptMethod(Protocol):
    def texts(self, examples: Sequence[str], count: int, rng: np.random.Generator) -> list[str]:
        """``count`` text prompts (``examples``: the target training examples)."""
        ...


@runtime_checkable
class ReferenceMethod(Protocol):
    def samples(self, examples: Sequence[str], count: int, rng: np.random.Generator) -> list[str]:
        """``count`` samples drawn without the generator."""
        ...
