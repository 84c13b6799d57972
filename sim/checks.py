"""Range checks for the ``__post_init__`` of config dataclasses (protocols, algorithms, envs).

Each raises ``ValueError("<field>: must be ... (got <value>)")``, the form that
:func:`sim.runtime.config.build_component` reports as one line naming ``<group>.<field>``. NaN
fails every bound (a comparison with NaN is false). Numpy only: plug-ins import this freely.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _fail(name: str, rule: str, value: Any, optional: bool) -> None:
    raise ValueError(f"{name}: must be {rule}{' or null' if optional else ''} (got {value!r})")


def at_least(obj: Any, minimum: float, *names: str, optional: bool = False) -> None:
    """Every field ``names`` of ``obj`` is ``>= minimum`` (or None, if ``optional``)."""
    for name in names:
        value = getattr(obj, name)
        if not (optional and value is None) and not value >= minimum:
            _fail(name, f">= {minimum}", value, optional)


def positive(obj: Any, *names: str, optional: bool = False) -> None:
    """Every field ``names`` of ``obj`` is ``> 0`` (or None, if ``optional``)."""
    for name in names:
        value = getattr(obj, name)
        if not (optional and value is None) and not value > 0:
            _fail(name, "> 0", value, optional)


def in_interval(obj: Any, low: float, high: float, *names: str, closed: bool = False) -> None:
    """Every field ``names`` of ``obj`` lies in ``[low, high)`` (``[low, high]`` if ``closed``)."""
    for name in names:
        value = getattr(obj, name)
        inside = low <= value <= high if closed else low <= value < high
        if not inside:
            _fail(name, f"in [{low}, {high}{']' if closed else ')'}", value, False)


def one_of(obj: Any, name: str, choices: Iterable[Any]) -> None:
    """Field ``name`` of ``obj`` is one of ``choices``."""
    allowed = tuple(choices)
    if getattr(obj, name) not in allowed:
        _fail(name, f"one of {allowed}", getattr(obj, name), False)
