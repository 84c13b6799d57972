"""Structured-config schemas and the validation that runs before Ray starts.

The run-level schema (:class:`RunConfig`, :class:`ClusterConfig`) lives here; the ``env``,
``model`` and ``algorithm`` groups are dataclasses named by ``_target_`` in their YAML, so a new
algorithm brings its own schema and nothing in ``sim/`` changes. :func:`build_component` merges a
group's YAML into its dataclass, so unknown keys and wrong types fail with the field's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim.errors import ConfigError

CLIENT_ENGINES = ("sequential", "vectorized")  # how a worker runs a task's client updates


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
    connect_timeout_s: float = 5.0
    num_workers: int | None = None  # None = as many as the resources allow
    worker: ResourceSpec = field(default_factory=ResourceSpec)
    server: ResourceSpec = field(default_factory=lambda: ResourceSpec(num_cpus=0.0))
    oracle: ResourceSpec = field(default_factory=lambda: ResourceSpec(num_cpus=0.0))


@dataclass
class ActiveConfig:
    """The active-learning protocol's sizes (used when the algorithm is a selector)."""

    seed_size: int = 20  # random labels before the first round
    batch_size: int = 10  # labels asked per round
    budget: int = 100  # total labels, seed set included; the run ends when it is spent
    oracles: int = 1  # annotator actors answering each request in parallel
    cost_per_label: float = 1.0
    label_noise: float = 0.0  # each annotator flips this fraction of labels (fixed per example)
    score_block: int = 65536  # pool rows per scoring task (tasks spread over the cluster)
    max_rounds: int | None = None  # stop early (resume=true continues); None = until the budget


@dataclass
class RunConfig:
    """The whole run. ``env``, ``model`` and ``algorithm`` are validated by their own schemas."""

    env: Any = MISSING
    model: Any = MISSING
    algorithm: Any = MISSING
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    learner: Any = None  # active protocol: the model trained on the revealed labels
    active: ActiveConfig = field(default_factory=ActiveConfig)
    name: str = "default"
    seed: int = 0
    rounds: int = 50
    clients_per_round: int = 10
    clients_per_task: int = 5  # aggregation unit: fixed, so sums do not depend on #workers
    client_engine: str = "sequential"  # or "vectorized": a task's clients trained together
    eval_every: int = 5
    eval_clients: int | None = None  # per-client accuracy on this many clients (None = all)
    checkpoint_every: int = 10  # 0 = only at the end
    resume: bool = False
    progress: bool = True
    output_dir: str | None = None  # None: Hydra's run dir (CLI) or ./outputs/<name>/<time> (API)


def register_schemas() -> None:
    """Make the run schema ``base_config`` available to ``conf/config.yaml``'s defaults list."""
    ConfigStore.instance().store(name="base_config", node=RunConfig)


def check_run_config(cfg: DictConfig) -> None:
    """Range checks of the run-level fields that the schema's types cannot express."""
    positive = ("rounds", "clients_per_round", "clients_per_task", "eval_every")
    for name in positive:
        if cfg[name] < 1:
            raise ConfigError(f"{name}: must be >= 1 (got {cfg[name]})")
    if cfg.eval_clients is not None and cfg.eval_clients < 1:
        raise ConfigError(f"eval_clients: must be >= 1 or null (got {cfg.eval_clients})")
    check_client_engine(cfg.client_engine)
    if cfg.checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every: must be >= 0 (got {cfg.checkpoint_every})")
    if cfg.cluster.mode not in ("local", "remote"):
        raise ConfigError(
            f"cluster.mode: must be one of ('local', 'remote') (got {cfg.cluster.mode!r})"
        )
    if cfg.cluster.num_workers is not None and cfg.cluster.num_workers < 1:
        raise ConfigError(
            f"cluster.num_workers: must be >= 1 or null (got {cfg.cluster.num_workers})"
        )
    active = cfg.active
    for name in ("seed_size", "batch_size", "budget", "oracles", "score_block"):
        if active[name] < 1:
            raise ConfigError(f"active.{name}: must be >= 1 (got {active[name]})")
    if active.budget < active.seed_size:
        raise ConfigError(
            f"active.budget: must be >= active.seed_size {active.seed_size} (got {active.budget})"
        )
    if not 0 <= active.label_noise < 1 or active.cost_per_label < 0:
        raise ConfigError("active: label_noise must be in [0, 1) and cost_per_label >= 0")
    if active.max_rounds is not None and active.max_rounds < 1:
        raise ConfigError(f"active.max_rounds: must be >= 1 or null (got {active.max_rounds})")
    for role in ("worker", "server", "oracle"):
        spec = cfg.cluster[role]
        if spec.num_cpus < 0 or spec.num_gpus < 0:
            raise ConfigError(f"cluster.{role}: num_cpus and num_gpus must be >= 0")


def check_client_engine(engine: str, algorithm: Any = None) -> None:
    """Fail, naming ``client_engine``, on an unknown engine, or if ``algorithm`` (when given)
    lacks the ``client_update_batch`` that the vectorized engine calls."""
    if engine not in CLIENT_ENGINES:
        raise ConfigError(f"client_engine: must be one of {CLIENT_ENGINES} (got {engine!r})")
    batched = algorithm is None or hasattr(algorithm, "client_update_batch")
    if engine == "vectorized" and not batched:
        raise ConfigError(
            f"client_engine: {type(algorithm).__name__} has no client_update_batch, so it "
            "cannot run on the vectorized engine; use client_engine=sequential"
        )


def build_component(group: str, node: Any) -> Any:
    """Instantiate the dataclass named by ``node._target_``, checking keys, types and values.

    Errors name the field as ``group.key``: an unknown key, a value of the wrong type, or a value
    the dataclass's ``__post_init__`` rejects (it raises ``ValueError("key: why")``).
    """
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"{group}: must be a config with a _target_ (got {node!r})")
    target = node._target_
    try:
        cls = get_class(target)
    except Exception as error:
        raise ConfigError(f"{group}._target_: cannot import {target!r} ({error})") from None
    values = OmegaConf.masked_copy(node, [k for k in node if k != "_target_"])
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), values)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or getattr(error, "key", None) or "?"
        message = str(error).splitlines()[0]
        raise ConfigError(f"{group}.{key}: {message}") from None
    except ValueError as error:
        raise ConfigError(f"{group}.{error}") from None
