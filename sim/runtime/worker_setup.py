"""Run in every Ray worker process at its start (``worker_process_setup_hook``) in the jobs that
ask for it (those that run Ray Train: ``sim.runtime.session.start_ray``). It is imported by every
worker, before any task, so it must cost nothing: the standard library, and the ``ray`` the
worker has already imported."""

from __future__ import annotations

import logging
import os

# Loggers of Ray's own actors, and the level below which they are silenced: Ray Train's
# placement-group cleaner warns every second that the state API (which needs the dashboard, off
# by default here) does not answer.
QUIET_LOGGERS = {
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
}


CONTROLLER = "ray.train.v2._internal.execution.controller.controller"  # Ray Train's controller


class NoPlacementTimeout(logging.Filter):
    """Drops Ray Train's controller traceback of a worker group not placed in time: the run
    fails with one line naming the role (:class:`sim.protocols.ray_train.RayTrainer`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return type(error).__name__ != "WorkerGroupStartupTimeoutError"


def quiet_worker_logs() -> None:
    """Apply :data:`QUIET_LOGGERS`, and point the worker's state-API calls at its own cluster.

    Ray Train's placement-group cleaner asks the state API about its controller with no
    address, which Ray resolves by looking for Ray instances on the machine: with another one
    running (two runs side by side), that fails with ``Found multiple active Ray instances``
    and a 30-line traceback, and the cleaner's thread dies. ``RAY_ADDRESS`` set to the worker's
    own cluster makes the lookup unambiguous."""
    import ray

    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger(CONTROLLER).addFilter(NoPlacementTimeout())
    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
