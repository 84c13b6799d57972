"""The protocol plug-in: how the runtime hands a run to a protocol, and what it gets back.

A protocol is a dataclass named by ``conf/protocol/<name>.yaml`` (``_target_``); its fields are
its settings, under the config node ``protocol``. The runtime builds it and the run's other
components (env, model, learner, algorithm: whichever the config names), then

1. ``job = protocol.prepare(setup)``: check that the components fit the protocol, load data,
   build the initial or resumed state. Nothing written, and no Ray to use: it runs in a thread
   beside Ray's start (after a head start of half a second, in which a refusal stops the run
   before Ray starts), so a refusal here writes nothing (raise
   :class:`~sim.errors.ConfigError` / :class:`~sim.errors.CohortError`).
2. ``outcome = job.run(context)`` on the Ray session the runtime started: the loop. It calls
   ``context.begin(history)`` once its last check has passed (that writes the run's config),
   ``context.record(record, line)`` per round and ``context.save(arrays, round, history)``
   to checkpoint, and returns the :class:`Outcome`.

The runtime writes the summary and the plot, and decides resumption: a run may resume when its
config differs from the checkpoint's only in the runtime's own keys and in the protocol's
``resumable`` fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from sim.errors import ConfigError

Checkpoint = tuple[dict[str, np.ndarray], dict[str, Any]]  # (arrays, metadata)


@dataclass(frozen=True)
class Setup:
    """What ``prepare`` gets: the built components by group, the run's seed, and the checkpoint
    to resume from (None for a fresh run); its metadata holds ``round`` and ``history``."""

    components: Mapping[str, Any]
    seed: int
    start: Checkpoint | None = None

    def component(self, group: str, interface: type, needs: str, protocol: str) -> Any:
        """``components[group]`` if it implements ``interface``, else a one-line ConfigError
        saying what the protocol needs (``needs``, e.g. ``"a pool env (env=tabular)"``)."""
        found = self.components.get(group)
        if not isinstance(found, interface):
            what = type(found).__name__ if found is not None else "none"
            raise ConfigError(f"{group}: protocol={protocol} needs {needs} (got {what})")
        return found


class RunContext(Protocol):
    """What the runtime hands ``Job.run``: the Ray session is up; the output dir is not yet
    written."""

    seed: int
    cluster: Any  # sim.runtime.config.ClusterConfig: roles' resources, the number of workers
    progress: bool  # whether the run prints its progress lines (progress=false: quiet)

    def begin(self, history: list[dict[str, Any]]) -> None:
        """Every check has passed: write the config and the history so far (a resumed run's)."""

    def record(self, record: dict[str, Any], line: str) -> None:
        """Append one round's metrics; print ``line`` unless the run is quiet."""

    def save(self, arrays: dict[str, np.ndarray], round_index: int, history: list) -> None:
        """Checkpoint atomically: the protocol's arrays, the round reached and the history."""

    def write(self, name: str, text: str) -> Path:
        """Write ``artifacts/<name>`` in the run's folder (after ``begin``); its path."""


@dataclass(frozen=True)
class Outcome:
    """What a protocol returns: the final parameters (hashed into the summary), the history
    (one record per round), the metrics worth a curve, the x axis of the curves, a phrase for
    the closing line (``"60 rounds"``), extra summary fields, and the final model's weights by
    parameter name (written as ``model.safetensors``)."""

    params: np.ndarray
    history: list[dict[str, Any]]
    curves: tuple[str, ...]
    x: str = "round"
    steps: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] | None = None  # the final model by parameter name (None: none)


def unflatten(flat: np.ndarray, layout: list[tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """A flat parameter vector split into named arrays by ``layout`` (each parameter's name and
    shape, in the order the vector holds them)."""
    sizes = [int(np.prod(shape)) for _, shape in layout]
    if sum(sizes) != flat.size:
        raise ValueError(f"the layout holds {sum(sizes)} parameters, the vector {flat.size}")
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    return {name: part.reshape(shape) for (name, shape), part in zip(layout, parts, strict=True)}


class Job(Protocol):
    def run(self, context: RunContext) -> Outcome: ...


class RunProtocol(Protocol):
    """A protocol plug-in (see the module docstring)."""

    resumable: ClassVar[tuple[str, ...]]  # its fields that a resumed run may change
    # The cluster roles (``cluster.<role>`` resources) whose actors and tasks it places; the
    # runtime checks that some node can hold each before the job runs (default: every role).
    roles: ClassVar[tuple[str, ...]]

    def prepare(self, setup: Setup) -> Job: ...
