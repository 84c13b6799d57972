"""Every YAML of every config group and every experiment preset (each combination of its sweep)
composes, and each component it names builds; plug-in YAMLs start from their dataclass's schema
and restate no default (the dataclass is the one source of defaults)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from sim import compose
from sim.runtime.config import CONF_DIR, PLUGINS, ClusterConfig, build_component
from sim.runtime.run import build_trackers

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
MAX_COMBINATIONS = 50  # a larger sweep is covered one swept key at a time
CONTEXT = {"learner": ["protocol=active"]}  # a group that only a protocol brings in


def option(group: str, name: str) -> list[str]:
    return [*CONTEXT.get(group, []), f"{group}={name}"]


def build_all(overrides: list[str]) -> None:
    cfg = compose(overrides)
    for group in PLUGINS:
        if cfg[group] is not None:
            build_component(group, cfg[group])
    OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ClusterConfig), cfg.cluster))
    build_trackers(cfg.logger)


@pytest.mark.parametrize("group,name", [o for o in OPTIONS if o[0] != "experiment"])
def test_every_option_composes_and_builds(group, name):
    build_all(option(group, name))


def sweep_overrides(name: str) -> list[list[str]]:
    """The override lists of a preset's multirun (its ``hydra.sweeper.params``, joined by each
    of its ``hydra.sweeper.grids`` in turn)."""
    raw = OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml")
    params = dict(OmegaConf.select(raw, "hydra.sweeper.params") or {})
    grids = OmegaConf.select(raw, "hydra.sweeper.grids") or [{}]
    sweeps = [
        [[f"{key}={v}" for v in str(values).split(",")] for key, values in {**params, **g}.items()]
        for g in grids
    ]
    if sum(len(list(itertools.product(*axes))) for axes in sweeps) <= MAX_COMBINATIONS:
        jobs = [list(c) for axes in sweeps for c in itertools.product(*axes)]
    else:
        jobs = [one_at_a_time(axes) for axes in sweeps]
        jobs = [job for grid in jobs for job in grid]
    return list(map(list, dict.fromkeys(map(tuple, jobs)))) or [[]]


def one_at_a_time(axes: list[list[str]]) -> list[list[str]]:
    """Every value of each axis once, the other axes at their first value."""
    firsts = [axis[0] for axis in axes]
    return [firsts[:i] + [v] + firsts[i + 1 :] for i, axis in enumerate(axes) for v in axis]


@pytest.mark.parametrize("name", [n for g, n in OPTIONS if g == "experiment"])
def test_every_preset_composes_and_builds_for_each_swept_value(name):
    for overrides in sweep_overrides(name):
        build_all([f"experiment={name}", *overrides])


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
