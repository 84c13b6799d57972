"""Cohort: the plug-in interfaces (:mod:`sim.interfaces`), the runtime (:mod:`sim.runtime`), the
protocols (:mod:`sim.protocols`), training building blocks (:mod:`sim.training`) and reporting
(:mod:`sim.reporting`). Knows no particular algorithm.

``sim.run``, ``sim.compose`` and ``sim.Result`` (from :mod:`sim.runtime.run`) are imported on
first use, so importing a plug-in interface (``sim.interfaces.active``) costs no Ray or Hydra.
"""

from importlib import import_module
from typing import Any

__all__ = ["Result", "compose", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("sim.runtime.run"), name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
