"""``hydra/sweeper=cohort`` (Cohort's default): Hydra's basic sweeper (the same grid, batches and
``hydra.sweeper.params``) where a job that cannot run never ends the sweep.

Hydra's basic sweeper composes every job of a batch before launching it and stops the whole
sweep at the first that fails (an override valid for some jobs of a sweep over config groups
but not for others), and stops after a batch at its first failed job. Here the launcher checks
the jobs: ``hydra/launcher=cohort`` composes and checks each one itself, ahead of the jobs;
Hydra's basic launcher is wrapped so that every job is composed and checked before the first
starts, the refused ones are reported and skipped, and a job that fails does not stop the next
(:func:`sim.runtime.sweep.launch_in_turn`). The sweep ends with a table of what failed. Any other
launcher (joblib, submitit: their own parallelism) gets Hydra's own check of each batch.

``hydra.sweeper.grids`` (a list of ``params``-like dicts) makes the sweep a union of grids: each
grid's values are added to ``params`` (a key in both: the grid's), the command line's overrides
win over both, and a job found in two grids runs once (its overrides compared as written, in
any order). Unquoted YAML numbers, booleans and null are taken as Hydra writes them. An
ablation whose arms sweep different keys (a field that only one algorithm has) is one sweep, not
several commands.
(No ``from __future__ import annotations``: see ``cohort_launcher``.)
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Dict, List, Optional  # noqa: UP035 (Hydra's structured configs)

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.cohort_launcher.cohort_launcher import CohortLauncher


@dataclass
class CohortSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.cohort_launcher.cohort_sweeper.CohortSweeper"
    grids: Optional[List[Dict[str, Any]]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="cohort", node=CohortSweeperConf, provider="cohort"
)


class InTurn(Launcher):
    """Another launcher's jobs one at a time, each checked first (see the module docstring)."""

    def __init__(self, inner: Launcher, hydra_context: HydraContext, config: DictConfig) -> None:
        self.inner, self.hydra_context, self.config = inner, hydra_context, config

    def setup(self, **_: Any) -> None:  # the inner launcher is set up already
        pass

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from sim.runtime import sweep

        return sweep.launch_in_turn(
            self.inner, self.hydra_context, self.config, job_overrides, initial_job_idx
        )


class CohortSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: int | None,
        params: dict[str, str] | None = None,
        grids: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(max_batch_size, params)
        if grids is not None and not grids:
            raise ValueError("hydra.sweeper.grids: give at least one grid, or null")
        self.grids = None if grids is None else [as_sweep(grid) for grid in grids]
        self.arguments: list[str] = []  # the command line's, kept by sweep() for the grids

    def sweep(self, arguments: list[str]) -> Any:
        self.arguments = list(arguments)
        return super().sweep(arguments)

    def split_arguments(  # type: ignore[override]
        self, overrides: list[Override], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        """The jobs of ``params`` and the command line (``overrides``), or, with ``grids``, of
        each grid in turn (see the module docstring), in batches of ``max_batch_size``."""
        if self.grids is None:
            return BasicSweeper.split_arguments(overrides, max_batch_size)
        assert self.hydra_context is not None
        parse = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs: dict[tuple[str, ...], list[str]] = {}  # the same overrides in any order: one job
        for grid in self.grids:
            lines = [f"{k}={v}" for k, v in {**self.params, **grid}.items()] + self.arguments
            for job in BasicSweeper.split_arguments(parse.parse_overrides(lines), None)[0]:
                jobs.setdefault(tuple(sorted(job)), job)
        return list(self.split_overrides_to_chunks(list(jobs.values()), max_batch_size))

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if isinstance(self.launcher, BasicLauncher):
            self.launcher = InTurn(self.launcher, hydra_context, config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing here for the cohort launcher and Hydra's basic one (wrapped): they compose
        and check each job (a refused one is recorded and skipped, never the end of the sweep),
        once. Any other launcher (its own parallelism, kept): Hydra's check of the batch."""
        if not isinstance(self.launcher, CohortLauncher | InTurn):
            super().validate_batch_is_legal(batch)


def as_sweep(grid: dict[str, Any]) -> dict[str, str]:
    """A grid's values as ``params`` holds them: strings as written, ``null`` for None, YAML's
    numbers and booleans as Hydra writes them (``3``, ``1.25``, ``true``)."""
    text = {None: "null", True: "true", False: "false"}
    return {
        str(k): text[v] if v is None or isinstance(v, bool) else str(v) for k, v in grid.items()
    }
