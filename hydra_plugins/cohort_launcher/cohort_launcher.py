"""``hydra/launcher=cohort``: a multirun's jobs side by side on Ray, each in its own placement
group (the engine: :mod:`sim.runtime.sweep`).

Hydra finds this module in the ``hydra_plugins`` namespace package and imports it at every
start, so it imports nothing heavy until a sweep is launched. (No ``from __future__ import
annotations``: Hydra executes the module without registering it, where a dataclass cannot
resolve string annotations.)
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class CohortLauncherConf:
    """``hydra.launcher.*`` (see :class:`sim.runtime.sweep.Settings`)."""

    _target_: str = "hydra_plugins.cohort_launcher.cohort_launcher.CohortLauncher"
    max_concurrent: int | None = None  # jobs in flight at most (None: as many as fit)
    workers_per_job: int | None = None  # None: the cluster's workers split among the jobs
    max_retries: int = 2  # per job, after an infrastructure fault, from its checkpoint
    progress: bool | None = None  # a live line (None: when stdout is a terminal)


ConfigStore.instance().store(
    group="hydra/launcher", name="cohort", node=CohortLauncherConf, provider="cohort"
)


class CohortLauncher(Launcher):
    def __init__(self, **options: Any) -> None:
        self.options = options  # hydra.launcher's fields (CohortLauncherConf)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        # The task function is the app's (sim.runtime.run.hydra_task, run in each job's Ray
        # task), whatever Hydra app launches the sweep: the jobs are Cohort runs.
        self.config, self.hydra_context = config, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from sim.runtime import sweep

        assert self.config is not None and self.hydra_context is not None
        settings = sweep.Settings(**self.options)
        return sweep.launch(
            settings, self.hydra_context, self.config, job_overrides, initial_job_idx
        )
