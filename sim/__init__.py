"""Cohort's runtime: protocols, Ray actors, configs, outputs. Knows no particular algorithm.

``sim.run``, ``sim.compose`` and ``sim.Result`` (from :mod:`sim.main`) are imported on first
use, so an actor that needs only a small module (an oracle: ``sim.oracle``) does not pay for
importing torch and Hydra.
"""

from importlib import import_module
from typing import Any

__all__ = ["Result", "compose", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("sim.main"), name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
