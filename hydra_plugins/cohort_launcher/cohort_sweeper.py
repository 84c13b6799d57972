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
(No ``from __future__ import annotations``: see ``cohort_launcher``.)
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.cohort_launcher.cohort_launcher import CohortLauncher


@dataclass
class CohortSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.cohort_launcher.cohort_sweeper.CohortSweeper"


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
