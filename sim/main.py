"""`sim.run`: wire env, algorithm and cluster from the config; validate, run, write outputs."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import ray
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from sim import checkpoint, seeding
from sim.active import ACTIVE_CURVES, Selector, train_active
from sim.config import (
    build_component,
    check_client_engine,
    check_run_config,
    register_schemas,
)
from sim.data import FederatedData
from sim.errors import CohortError, ConfigError
from sim.federated import (
    ClientWorker,
    FederatedAlgorithm,
    Server,
    ServerState,
    evaluate,
    split_tasks,
)
from sim.outputs import RunDirectory
from sim.plotting import plot_curves
from sim.runtime import pool_size, ray_session, remote_address, worker_capacity
from sim.training import initial_params
from sim.workers import WorkerPool

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray's marker resource of the head node
# Keys that may change between a run and its resumption.
CURVES = ("test_accuracy", "test_loss", "distance_to_optimum")
RESUMABLE_CHANGES = ("resume", "progress", "output_dir", "cluster", "rounds")


@dataclass
class Result:
    """What a run returns: resolved config, per-round history, final metrics, output dir."""

    config: dict[str, Any]
    history: list[dict[str, Any]]
    final: dict[str, float]
    output_dir: Path
    params: np.ndarray
    wall_time_s: float


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``python -m sim OVERRIDES...`` would run, composed without starting anything."""
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose("config", overrides=list(overrides))


def run(cfg: DictConfig | Sequence[str] = (), *, overrides: Sequence[str] | None = None) -> Result:
    """Run one experiment from a composed config or a list of Hydra overrides."""
    if not isinstance(cfg, DictConfig):
        overrides = list(cfg)
        cfg = compose(overrides)
    return run_config(cfg, overrides=list(overrides or []))


def _default_output_dir(name: str) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    return Path("outputs") / name / stamp


def _round_record(round_index: int, client_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    kept = [m for m in client_metrics if not m["dropped"]]
    record: dict[str, Any] = {
        "round": round_index,
        "clients": len(client_metrics),
        "dropped_clients": len(client_metrics) - len(kept),
        "examples": int(sum(m["num_examples"] for m in kept)),
    }
    names = sorted({k for m in kept for k in m} - {"client", "num_examples", "dropped"})
    for name in names:
        record[name] = float(np.mean([m[name] for m in kept if name in m]))
    return record


def _progress_line(record: dict[str, Any], rounds: int) -> str:
    parts = [f"[round {record['round']:>{len(str(rounds))}}/{rounds}]"]
    for key, label in (
        ("train_loss", "train_loss"),
        ("test_accuracy", "test_acc"),
        ("test_loss", "test_loss"),
        ("client_accuracy_mean", "client_acc"),
    ):
        if key in record:
            parts.append(f"{label} {record[key]:.4f}")
    if record["dropped_clients"]:
        parts.append(f"dropped {record['dropped_clients']}")
    if record.get("worker_restarts"):
        parts.append(f"worker restarts {record['worker_restarts']}")
    parts.append(f"{record['round_time_s']:.2f}s")
    return "  ".join(parts)


def _save_checkpoint(
    run_dir: RunDirectory,
    state: ServerState,
    round_index: int,
    history: list[dict[str, Any]],
    config: dict[str, Any],
) -> None:
    arrays = {"params": state.params, **{f"opt/{k}": v for k, v in state.opt_state.items()}}
    meta = {"round": round_index, "history": history, "config": config}
    checkpoint.save(run_dir.checkpoint_path, arrays, meta)


def check_resumable(before: dict[str, Any], now: dict[str, Any]) -> None:
    """Fail unless two configs differ only in what a resumed run may change."""

    def comparable(config: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}
        kept["active"] = {k: v for k, v in kept.get("active", {}).items() if k != "max_rounds"}
        return kept

    before, now = comparable(before), comparable(now)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"resume: the config differs from the checkpoint's in {changed}")


def read_checkpoint(
    run_dir: RunDirectory, config: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The run's checkpoint (arrays, metadata), if ``config`` may resume it."""
    arrays, meta = checkpoint.load(run_dir.checkpoint_path)
    check_resumable(meta["config"], config)
    return arrays, meta


def _load_checkpoint(run_dir: RunDirectory, config: dict[str, Any]):
    arrays, meta = read_checkpoint(run_dir, config)
    opt_state = {k.removeprefix("opt/"): v for k, v in arrays.items() if k.startswith("opt/")}
    return ServerState(arrays["params"], opt_state), meta["round"], meta["history"]


def run_config(
    cfg: DictConfig, overrides: Sequence[str] = (), output_dir: str | None = None
) -> Result:
    """Validate everything, then run. Nothing is written before the config has been checked.

    The algorithm's ``protocol`` picks the loop: ``"active"`` (a selector) or federated.
    """
    start_time = time.perf_counter()
    check_run_config(cfg)
    env = build_component("env", cfg.env)
    algorithm = build_component("algorithm", cfg.algorithm)
    run_dir = RunDirectory(
        output_dir or cfg.output_dir or _default_output_dir(cfg.name), cfg.resume
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    placement: dict[str, Any] = {}  # where the run's actors ran
    if getattr(algorithm, "protocol", "federated") == "active":
        params, history, curves, x = _run_active(cfg, env, algorithm, run_dir, config)
        steps = f"{len(history)} rounds, {history[-1]['labels']} labels"
    else:
        params, history, placement = _run_federated(cfg, env, algorithm, run_dir, config)
        curves, x, steps = CURVES, "round", f"{cfg.rounds} rounds"

    wall_time = time.perf_counter() - start_time
    final = {k: v for k, v in history[-1].items() if isinstance(v, float) and not k.endswith("_s")}
    summary = {
        "config": config,
        "overrides": list(overrides),
        "final": final,
        "rounds": len(history),
        "wall_time_s": wall_time,
        "params_sha256": hashlib.sha256(params.tobytes()).hexdigest(),
        **placement,
    }
    run_dir.write_summary(summary)
    plot_curves(history, run_dir.path / "curves.png", curves, title=cfg.name, x=x)
    if cfg.progress:
        shown = ", ".join(f"{k} {final[k]:.4f}" for k in curves if k in final)
        print(f"done: {steps} in {wall_time:.1f} s; {shown}; outputs in {run_dir.path}", flush=True)
    return Result(config, history, final, run_dir.path, params, wall_time)


def _run_federated(
    cfg: DictConfig,
    env: Any,
    algorithm: FederatedAlgorithm,
    run_dir: RunDirectory,
    config: dict[str, Any],
) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
    """The federated loop; returns the final parameters, the history, and where the client
    workers ran (:meth:`WorkerPool.summary`)."""
    if not hasattr(env, "load"):
        raise ConfigError(
            f"env: {type(env).__name__} is a pool for active learning; the algorithm "
            f"{type(algorithm).__name__} is federated and needs a federated env"
        )
    model_spec = build_component("model", cfg.model)
    check_client_engine(cfg.client_engine, algorithm)
    try:
        data: FederatedData = env.load(seeding.rng(cfg.seed, "env"))
    except (FileNotFoundError, ValueError) as error:
        raise CohortError(f"env: {error}") from None
    for name in ("clients_per_round", "eval_clients"):
        if (cfg[name] or 0) > data.num_clients:
            raise ConfigError(
                f"{name}: must be <= the population of {data.num_clients} clients (got {cfg[name]})"
            )
    if cfg.resume:
        state, start_round, history = _load_checkpoint(run_dir, config)
        if start_round >= cfg.rounds:
            raise CohortError(
                f"resume: the checkpoint is already at round {start_round} of "
                f"{cfg.rounds}; raise rounds to continue"
            )
    else:
        try:
            params = initial_params(
                lambda: model_spec.build(data.input_shape, data.num_classes),
                seeding.torch_seed(cfg.seed, "init"),
            )
        except ValueError as error:
            raise ConfigError(f"model: {error}") from None
        state, start_round, history = algorithm.server_init(params), 0, []
    if cfg.cluster.mode == "remote" and not ray.is_initialized():
        remote_address(cfg.cluster)
    with ray_session(cfg.cluster):
        state, history, placement = _train(
            cfg, data, model_spec, algorithm, state, start_round, history, run_dir, config
        )
    return state.params, history, placement


def _run_active(
    cfg: DictConfig,
    env: Any,
    selector: Selector,
    run_dir: RunDirectory,
    config: dict[str, Any],
) -> tuple[np.ndarray, list[dict[str, Any]], tuple[str, ...], str]:
    if not hasattr(env, "load_pool"):
        raise ConfigError(
            f"env: {type(env).__name__} is federated; the algorithm {type(selector).__name__} "
            "is an active-learning selector and needs a pool env (env=tabular, "
            "env=fashion_mnist_pool)"
        )
    learner = build_component("learner", cfg.learner)
    try:
        env.locate()  # fail here, with the way to get the data, not inside an oracle actor
    except FileNotFoundError as error:
        raise CohortError(f"env: {error}") from None
    start = read_checkpoint(run_dir, config) if cfg.resume else None
    if cfg.cluster.mode == "remote" and not ray.is_initialized():
        remote_address(cfg.cluster)
    with ray_session(cfg.cluster):
        params, history = train_active(cfg, env, learner, selector, run_dir, config, start)
    return params, history, ACTIVE_CURVES, "labels"


def _train(
    cfg: DictConfig,
    data: FederatedData,
    model_spec: Any,
    algorithm: FederatedAlgorithm,
    state: ServerState,
    start_round: int,
    history: list[dict[str, Any]],
    run_dir: RunDirectory,
    config: dict[str, Any],
) -> tuple[ServerState, list[dict[str, Any]], dict[str, Any]]:
    cluster = OmegaConf.to_object(cfg.cluster)
    tasks_per_round = math.ceil(cfg.clients_per_round / cfg.clients_per_task)
    num_workers = pool_size(cluster.worker, cluster.num_workers, tasks_per_round)
    data_ref = ray.put(data)

    def spawn() -> Any:
        return ClientWorker.options(**cluster.worker.ray_options()).remote(
            data_ref, model_spec, algorithm, cfg.seed, cluster.worker.num_cpus, cfg.client_engine
        )

    pool = WorkerPool(spawn, num_workers, lambda: worker_capacity(cluster.worker))
    # The server's state lives only in its actor: pin it to the head node (losing the head loses
    # the cluster anyway), so that losing another node loses client workers only. (The driver's
    # node is not a safe choice: on one machine, a driver may attach to any of its nodes.)
    options = cluster.server.ray_options()
    options["resources"] = {**options.get("resources", {}), HEAD_NODE_RESOURCE: 0.001}
    server = Server.options(**options).remote(algorithm, state)
    run_dir.prepare(config)  # only now: every check that can refuse the run has passed
    run_dir.write_metrics(history)
    eval_clients = np.arange(data.num_clients)
    if cfg.eval_clients is not None:
        chosen = seeding.rng(cfg.seed, "eval_clients").choice(
            data.num_clients, cfg.eval_clients, replace=False
        )
        eval_clients = np.sort(chosen)
    params_ref = server.params.remote()  # the global parameters the next round starts from
    for round_index in range(start_round + 1, cfg.rounds + 1):
        tick = time.perf_counter()
        cohort = seeding.sample_cohort(
            cfg.seed, round_index, data.num_clients, cfg.clients_per_round
        )
        restarts = pool.restarts
        calls = [
            (params_ref, task, round_index) for task in split_tasks(cohort, cfg.clients_per_task)
        ]
        outputs = pool.run("run", calls, num_returns=2)
        applied = server.apply.remote(round_index, *(task_sum for task_sum, _ in outputs))
        record = _round_record(
            round_index, [m for _, task_metrics in outputs for m in task_metrics]
        )
        ray.get(applied)
        params_ref = server.params.remote()  # this round's result: evaluated, then trained from
        if round_index % cfg.eval_every == 0 or round_index == cfg.rounds:
            record.update(evaluate(pool, params_ref, data, eval_clients))
        record["worker_restarts"] = pool.restarts - restarts
        if data.optimum is not None:
            distance = np.linalg.norm(ray.get(params_ref) - data.optimum)
            record["distance_to_optimum"] = float(distance)
        record["round_time_s"] = time.perf_counter() - tick
        history.append(record)
        run_dir.append_metrics(record)
        if cfg.progress:
            print(_progress_line(record, cfg.rounds), flush=True)
        due = cfg.checkpoint_every and round_index % cfg.checkpoint_every == 0
        if due or round_index == cfg.rounds:
            state = ray.get(server.get_state.remote())
            _save_checkpoint(run_dir, state, round_index, history, config)
    return state, history, pool.summary()
