"""Structured-config schemas and the validation that runs before Ray starts.

The run-level schema (:class:`RunConfig`, :class:`ClusterConfig`) lives here. The ``protocol``,
``env``, ``model``, ``learner``, ``algorithm`` and ``aggregator`` nodes are dataclasses named by
``_target_`` in their YAML: the dataclass is the one source of their defaults (the YAML names it
and sets only what a variant changes), so a new plug-in brings its own schema and nothing in
``sim/`` changes.
:func:`build_component` merges a node into its dataclass, so unknown keys and wrong types fail
with the field's name and the run's recorded config holds every value.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigNode, ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim import checks
from sim.errors import ConfigError

# The shipped configs: ``sim/conf`` (a link to the checkout's top-level ``conf/``; a copy in an
# installed distribution).
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
COMPONENTS = (
    "env",
    "model",
    "learner",
    "algorithm",
    "aggregator",
)  # built when the config names them
PLUGINS = ("protocol", *COMPONENTS)  # config groups whose options name a dataclass
# Modules that moved (issue 30: models in models/, algorithms grouped by interface): old module
# -> new module. A config saved before names the old ``_target_``; it fails naming the new one.
MOVED = {
    "envs.gpt": "models.gpt",
    "envs.t5": "models.t5",
    "envs.pretrained": "models.smollm2",
    **{f"envs.models.{cls}": f"models.{module}.{cls}" for cls, module in (
        ("LogisticRegression", "linear"), ("LinearRegression", "linear"),
        ("MLP", "mlp"), ("CNN", "cnn"),
    )},
    **{f"sim.training.learner.{cls}": f"models.learner.{cls}"
       for cls in ("MLPLearner", "EnsembleLearner")},
    "algorithms.covering": "algorithms.covering.active_covering",
    **{f"algorithms.{module}": f"algorithms.{group}.{module}"
       for group, modules in (
           ("federated", "fedavg fedprox fedpa"),
           ("active", "margin entropy least_confidence random_selection badge coreset "
                      "cluster_margin iwes"),
           ("retraining", "churn"),
           ("teacher_student", "salt distillspec"),
           ("pretraining", "span_corruption spactor"),
           ("synthesis", "softsrv hard_prompt real_data"),
       )
       for module in modules.split()},
}  # fmt: skip


def moved_target(target: str) -> str | None:
    """Where ``target`` (a dotted class path) lives now if it or its module moved, else None."""
    if target in MOVED:
        return MOVED[target]
    module, _, name = target.rpartition(".")
    return f"{MOVED[module]}.{name}" if module in MOVED else None


ROLES = (
    "worker",
    "server",
    "oracle",
    "teacher",
    "generator",
)  # actor roles with their own resources


@dataclass
class ResourceSpec:
    """Ray resources of one actor: CPUs, (fractional) GPUs, custom resources."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)

    def ray_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.resources:
            options["resources"] = dict(self.resources)
        return options


@dataclass
class ClusterConfig:
    """Where the run's Ray lives and how its actors are sized."""

    mode: str = "local"  # local: start an embedded Ray; remote: connect to `address`
    address: str | None = None  # remote only; falls back to $RAY_ADDRESS
    num_cpus: int | None = None  # local only; None = this machine's count
    num_gpus: int | None = None  # local only; logical GPUs (scheduling tests on CPU)
    dashboard: bool = False
    connect_timeout_s: float = 5.0  # remote: how long the cluster may take to answer
    start_timeout_s: float = 180.0  # how long starting or joining Ray may take in all
    placement_timeout_s: float = 300.0  # how long an actor may wait for its resources and start
    num_workers: int | None = None  # None = as many as the resources allow
    worker: ResourceSpec = field(default_factory=ResourceSpec)  # client workers, trainers
    server: ResourceSpec = field(default_factory=lambda: ResourceSpec(num_cpus=0.0))
    oracle: ResourceSpec = field(default_factory=lambda: ResourceSpec(num_cpus=0.0))
    teacher: ResourceSpec = field(default_factory=lambda: ResourceSpec(num_cpus=0.0))
    generator: ResourceSpec = field(default_factory=ResourceSpec)  # frozen LMs that sample


@dataclass
class RunConfig:
    """The whole run. ``protocol`` and the components are validated by their own schemas."""

    protocol: Any = MISSING
    env: Any = MISSING
    model: Any = None  # federated and centralized protocols
    learner: Any = None  # active protocol: the model trained on the revealed labels
    algorithm: Any = None
    aggregator: Any = None  # federated protocol: how the server combines the clients' updates
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    logger: Any = field(default_factory=dict)  # trackers by name (conf/logger/); see sim.tracking
    name: str = "default"
    seed: int = 0
    resume: bool = False
    progress: bool = True
    output_dir: str | None = None  # None: Hydra's run dir (CLI) or ./outputs/<name>/<time> (API)
    objective: str | None = None  # a final metric the Hydra task returns (a sweeper optimises it)


class LazySchema(ConfigNode):
    """The schema ``schema/<group>/<name>`` of a plug-in YAML, built when a composition loads it
    (Hydra loads a copy and sets its node): the plug-in's class, and what its module imports, is
    imported only by a run that uses it, not by every start of ``python -m sim``."""

    def __init__(self, name: str, group: str, target: str) -> None:
        self.name, self.group, self.package, self.provider = name, group, None, "cohort"
        self.target, self._node = target, None

    @property  # type: ignore[override]
    def node(self) -> DictConfig:
        return OmegaConf.create(schema_of(self.target)) if self._node is None else self._node

    @node.setter
    def node(self, value: DictConfig) -> None:
        self._node = value


def schema_of(target: str) -> dict[str, Any]:
    """``_target_`` and every field of the dataclass ``target`` with its default; only
    ``_target_`` when it cannot be imported (the run that uses it reports the import error,
    :func:`build_component`)."""
    try:
        cls = get_class(target)
    except Exception:
        return {"_target_": target}
    return {"_target_": target, **OmegaConf.to_container(OmegaConf.structured(cls))}


def register_schemas(conf_dir: Path = CONF_DIR) -> None:
    """Store the run schema ``base_config`` and, for every plug-in YAML ``<group>/<name>.yaml``
    that names a ``_target_``, the schema ``schema/<group>/<name>``: every field of that dataclass
    with its default (a :class:`LazySchema`, built on first use). A plug-in YAML starts from its
    schema (``- /schema/<group>@_here_: <name>`` in its defaults list), so the dataclass is the
    one source of the defaults and every field can be overridden on the command line. A YAML in
    the ``_global_`` package (one that also sets other groups' fields) names it under
    ``<group>._target_`` and starts from ``- /schema/<group>@<group>: <name>``; a logger's YAML
    (``conf/logger/<name>.yaml``, lightning-hydra-template's layout) names it under
    ``<name>._target_`` and starts from ``- /schema/logger@<name>: <name>``."""
    # The default run and sweep folders end in the process id (conf/config.yaml): unique among
    # the runs of one machine; the run folder is output_dir when one is given.
    OmegaConf.register_new_resolver("cohort_pid", os.getpid, replace=True)
    OmegaConf.register_new_resolver(
        "cohort_or", lambda value, default: default if value is None else value, replace=True
    )
    store = ConfigStore.instance()
    store.store(name="base_config", node=RunConfig)
    schemas = store.repo.setdefault("schema", {})
    for group in (*PLUGINS, "logger"):
        for path in sorted((conf_dir / group).glob("*.yaml")):
            loaded = OmegaConf.load(path)
            target = (
                loaded.get("_target_")
                or OmegaConf.select(loaded, f"{group}._target_")
                or OmegaConf.select(loaded, f"{path.stem}._target_")  # a logger: <name>: {...}
            )
            if isinstance(target, str):
                name = f"{path.stem}.yaml"
                schemas.setdefault(group, {})[name] = LazySchema(name, f"schema/{group}", target)


def sweep_in_jobs(args: Sequence[str]) -> list[str]:
    """The command line of a multirun that sweeps a config group (``algorithm=margin,random``)
    with each plain override of a plug-in's field (``protocol.budget=60``) written as a sweep of
    one value (``protocol.budget=choice(60)``): Hydra then applies it in each job's composition,
    with that job's groups (the algorithm's protocol), not to the sweep's primary config, whose
    groups are the defaults (there it fails: ``Key 'budget' is not in struct``). The jobs get the
    same overrides either way. Any other command line is returned as it is."""
    if not {"-m", "--multirun"} & set(args):
        return list(args)
    candidates = [(i, arg) for i, arg in enumerate(args) if "=" in arg and not arg.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides([arg for _, arg in candidates])
    except (OmegaConfBaseException, HydraException):
        return list(args)  # Hydra reports it
    groups = {*PLUGINS, "experiment"}
    if not any(o.is_sweep_override() and o.key_or_group in groups for o in parsed):
        return list(args)
    rewritten = list(args)
    for (i, arg), override in zip(candidates, parsed, strict=True):
        key = override.key_or_group
        field_of_plugin = "." in key and key.split(".")[0] in PLUGINS
        plain = not (override.is_sweep_override() or override.is_add() or override.is_delete())
        if field_of_plugin and plain and not override.is_hydra_override():
            rewritten[i] = f"{key}=choice({arg.split('=', 1)[1]})"
    return rewritten


SEARCHPATH = re.compile(r"^\+{0,2}hydra\.searchpath=\[?(?P<paths>[^\]]*)\]?$")


def user_conf_dirs(args: Sequence[str]) -> list[Path]:
    """The config folders a command line adds to Hydra's search path: the ``file://`` entries
    of ``hydra.searchpath=[...]``, and ``--config-dir``/``-cd`` (a user project's ``conf/``)."""
    dirs = []
    for i, arg in enumerate(args):
        if match := SEARCHPATH.match(arg):
            entries = (entry.strip().strip("'\"") for entry in match["paths"].split(","))
            dirs += [Path(e.removeprefix("file://")) for e in entries if e.startswith("file://")]
        elif arg in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
    return dirs


def use_user_plugins(args: Sequence[str]) -> None:
    """Plug-ins from the user's own project: register the schemas of the plug-in YAMLs in the
    folders ``args`` add to the search path (so their dataclasses' fields are their schema, as
    for shipped plug-ins), and make the modules of the folder the command runs in importable
    here and in the Ray workers this process starts (``PYTHONPATH``), as ``python -m`` does for
    its own process."""
    dirs = user_conf_dirs(args)
    for folder in dirs:
        if not folder.is_dir():
            raise ConfigError(f"hydra.searchpath: no such folder {folder}")
        register_schemas(folder)
    if dirs:
        here = os.getcwd()
        if here not in sys.path:
            sys.path.insert(0, here)
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if here not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([here, *paths])


def check_run_config(cfg: DictConfig) -> None:
    """Range checks of the run-level fields that the schema's types cannot express."""
    if cfg.seed < 0:
        raise ConfigError(f"seed: must be >= 0 (got {cfg.seed})")
    if cfg.cluster.mode not in ("local", "remote"):
        raise ConfigError(
            f"cluster.mode: must be one of ('local', 'remote') (got {cfg.cluster.mode!r})"
        )
    if cfg.cluster.num_workers is not None and cfg.cluster.num_workers < 1:
        raise ConfigError(
            f"cluster.num_workers: must be >= 1 or null (got {cfg.cluster.num_workers})"
        )
    cluster = OmegaConf.to_object(cfg.cluster)
    try:
        checks.finite_fields(cluster)
        checks.at_least(cluster, 1, "num_cpus", optional=True)
        checks.at_least(cluster, 0, "num_gpus", optional=True)
        checks.positive(cluster, "connect_timeout_s", "start_timeout_s", "placement_timeout_s")
    except ValueError as error:
        raise ConfigError(f"cluster.{error}") from None
    for role in ROLES:
        spec = cfg.cluster[role]
        if not (spec.num_cpus >= 0 and spec.num_gpus >= 0):
            raise ConfigError(f"cluster.{role}: num_cpus and num_gpus must be >= 0")
        for name, amount in spec.resources.items():  # finite: checked above
            if amount < 0:
                raise ConfigError(f"cluster.{role}.resources.{name}: must be >= 0 (got {amount})")


def build_component(group: str, node: Any) -> Any:
    """Instantiate the dataclass named by ``node._target_``, checking keys, types and values.

    Errors name the field as ``group.key``: an unknown key, a value of the wrong type, or a value
    the dataclass's ``__post_init__`` rejects (it raises ``ValueError("key: why")``).
    """
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"{group}: must be a config with a _target_ (got {node!r})")
    target = node._target_
    if (new := moved_target(target)) is not None:
        raise ConfigError(
            f"{group}._target_: {target!r} moved to {new!r} (a config saved by an earlier "
            "version: write the new path)"
        )
    try:
        cls = get_class(target)
    except Exception as error:
        raise ConfigError(f"{group}._target_: cannot import {target!r} ({error})") from None
    values = OmegaConf.masked_copy(node, [k for k in node if k != "_target_"])
    try:
        component = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
        checks.finite_fields(component)
        return component
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or getattr(error, "key", None) or "?"
        raise ConfigError(f"{group}.{key}: {str(error).splitlines()[0]}") from None
    except ValueError as error:
        raise ConfigError(f"{group}.{error}") from None


def component_config(target: str, component: Any) -> dict[str, Any]:
    """The full config of a built component: its ``_target_`` and every field's value."""
    return {"_target_": target, **OmegaConf.to_container(OmegaConf.structured(component))}
