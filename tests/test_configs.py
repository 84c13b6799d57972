"""Every YAML of every config group and every experiment preset (each combination of its sweep)
composes, and each component it names builds; plug-in YAMLs start from their dataclass's schema
and restate no default (the dataclass is the one source of defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from sim import compose
from sim.runtime.config import CONF_DIR, PLUGINS, ClusterConfig, build_component
from sim.runtime.reservation import (
    HEAD_NODE_RESOURCE,
    capacity,
    reservation_of,
    why_never,
    worker_share,
)
from sim.runtime.run import build_trackers

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
MAX_COMBINATIONS = 50  # a larger sweep is covered one swept key at a time
CONTEXT = {"learner": ["protocol=active"]}  # a group that only a protocol brings in


def option(group: str, name: str) -> list[str]:
    return [*CONTEXT.get(group, []), f"{group}={name}"]


def build_all(overrides: list[str]) -> str | None:
    """Compose and build every component; why the job could never run on a 2-core machine
    (the README's), or None."""
    cfg = compose(overrides)
    built = {
        group: build_component(group, cfg[group]) for group in PLUGINS if cfg[group] is not None
    }
    cluster = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ClusterConfig), cfg.cluster))
    build_trackers(cfg.logger)
    laptop = [{"CPU": 2.0, HEAD_NODE_RESOURCE: 1.0}]
    workers = cluster.num_workers or worker_share(capacity(laptop[0], cluster.worker), 1)
    held = reservation_of(built["protocol"], cluster, workers)
    return why_never(held.bundles(cluster), held.trained_resources(cluster), laptop)


@pytest.mark.parametrize("group,name", [o for o in OPTIONS if o[0] != "experiment"])
def test_every_option_composes_and_builds(group, name):
    build_all(option(group, name))


def sweep_overrides(name: str) -> list[list[str]]:
    """The override lists of a preset's multirun, as Cohort's sweeper makes them (its
    ``hydra.sweeper.params``, joined by each of its ``hydra.sweeper.grids``); of a sweep of more
    than ``MAX_COMBINATIONS`` jobs, those of each grid that bring a value not seen before in it
    (every value of every key of each grid at least once)."""
    raw = OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml")
    params = OmegaConf.select(raw, "hydra.sweeper.params")
    grids = OmegaConf.select(raw, "hydra.sweeper.grids")
    params = {k: str(v) for k, v in OmegaConf.to_container(params).items()} if params else {}
    every = [grid_jobs(params, grid) for grid in (OmegaConf.to_container(grids) if grids else [{}])]
    cover = sum(map(len, every)) > MAX_COMBINATIONS
    jobs: list[list[str]] = []
    for found in every:
        if cover:
            seen: set[str] = set()
            found = [job for job in found if not set(job) <= seen and not seen.update(job)]
        jobs += [job for job in found if job not in jobs]
    return jobs


def grid_jobs(params: dict[str, str], grid: dict) -> list[list[str]]:
    """The jobs of ``params`` joined by one grid, from Cohort's sweeper itself."""
    from types import SimpleNamespace

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.cohort_launcher.cohort_sweeper import CohortSweeper

    sweeper = CohortSweeper(None, params, [grid])
    sweeper.hydra_context = SimpleNamespace(config_loader=None)
    (jobs,) = sweeper.split_arguments(OverridesParser.create().parse_overrides([]), None)
    return jobs


@pytest.mark.parametrize("name", [n for g, n in OPTIONS if g == "experiment"])
def test_every_preset_composes_builds_and_fits_two_cores_for_each_swept_value(name):
    for overrides in sweep_overrides(name):
        assert build_all([f"experiment={name}", *overrides]) is None, overrides


def own_keys(path: Path) -> dict:
    raw = OmegaConf.to_container(OmegaConf.load(path))
    return {k: v for k, v in raw.items() if k not in ("defaults", "_target_")}


@pytest.mark.parametrize("group,name", [o for o in OPTIONS if o[0] in PLUGINS])
def test_plugin_yaml_starts_from_its_schema_and_restates_no_default(group, name):
    path = CONF_DIR / group / f"{name}.yaml"
    if "_target_" in OmegaConf.load(path):
        assert f"/schema/{group}@_here_: {name}" in path.read_text()
    node = compose(option(group, name))[group]
    defaults = OmegaConf.structured(get_class(node._target_))
    restated = {k: v for k, v in own_keys(path).items() if defaults.get(k) == v}
    assert not restated, f"{path} restates dataclass defaults: {restated}"
