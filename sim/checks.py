"""Range checks for the ``__post_init__`` of config dataclasses (protocols, algorithms, envs).

Each raises ``ValueError("<field>: must be ... (got <value>)")``, the form that
:func:`sim.runtime.config.build_component` reports as one line naming ``<group>.<field>``. NaN
fails every bound (a comparison with NaN is false); :func:`finite_fields`, run on every built
component, refuses NaN and infinity anywhere. Standard library only: plug-ins import this freely.
"""

from __future__ import annotations

import dataclasses
import math
import os
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


def available_memory() -> int:
    """Bytes this machine can give a new allocation now (``MemAvailable``; else total RAM)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits_in_memory(name: str, nbytes: float, what: str) -> None:
    """Refuse (``ValueError("<name>: <what> need about ... GiB ...")``) an allocation estimated
    at ``nbytes`` that this machine's available memory cannot hold: a clear refusal before
    anything is allocated instead of an OOM kill later."""
    available = available_memory()
    if nbytes > available:
        raise ValueError(
            f"{name}: {what} need about {nbytes / 2**30:.1f} GiB of memory, more than the "
            f"{available / 2**30:.1f} GiB available here"
        )


def finite_fields(obj: Any, prefix: str = "") -> None:
    """Every float in the dataclass ``obj`` (nested dataclasses, lists and dicts included) is
    finite: ``ValueError("<field>: must be a finite number (got nan)")`` otherwise."""

    def visit(value: Any, name: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name}: must be a finite number (got {value!r})")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for item in dataclasses.fields(value):
                visit(getattr(value, item.name), f"{name}.{item.name}" if name else item.name)
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{name}.{key}")
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                visit(item, f"{name}[{index}]")

    visit(obj, prefix)
