"""Run in every Ray worker process at its start (``worker_process_setup_hook``) in the jobs that
ask for it (those that run Ray Train: ``sim.runtime.session.start_ray``). Standard library only:
it is imported by every worker, before any task, so it must cost nothing."""

from __future__ import annotations

import logging

# Loggers of Ray's own actors, and the level below which they are silenced: Ray Train's
# placement-group cleaner warns every second that the state API (which needs the dashboard, off
# by default here) does not answer.
QUIET_LOGGERS = {
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
}


def quiet_worker_logs() -> None:
    """Apply :data:`QUIET_LOGGERS`."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
