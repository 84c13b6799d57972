"""The teacher-student protocol: a teacher actor serves soft labels; the student trains on Ray
Train (``TorchTrainer``, DDP; gloo on CPU, NCCL on GPU) and asks for them batch by batch.

A run: load the corpus (``env``: token streams); make sure the teacher is trained (once: its
weights are cached under the corpus's cache folder by the hash of its settings, and trained
here with the same Ray Train loop when missing); start the teacher actor (``cluster.teacher``
resources); for an algorithm that selects data (SALT_DS), have it score every training window
once (cached beside the teacher); then train the student (``model``, ``algorithm``) for
``steps`` steps of ``batch_size`` windows of ``context`` tokens on ``cluster.num_workers`` Ray
Train workers (``cluster.worker`` resources each), evaluating every ``eval_every`` steps on the
first ``eval_windows`` validation windows: train loss, validation loss (nats per token and bits
per byte), tokens per second, the time the workers waited for the teacher. With
``held_out.prompts`` set: the teacher continues that many test-split prompts (sampled at
temperature 1 and greedily, as Ray tasks) and every evaluation also gives the student's
agreement with it on them, ``alpha`` (``1 - TVD``) and ``alpha_greedy`` (same argmax); the
finished student's ``final_measures`` (the algorithm's) join the last record.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import ray
import safetensors
import safetensors.numpy

from sim import checks, seeding
from sim.data_dirs import discard_damaged
from sim.errors import CohortError, ConfigError
from sim.interfaces.protocol import Outcome, RunContext, Setup
from sim.interfaces.teacher_student import (
    Generation,
    LanguageModelSpec,
    StudentAlgorithm,
    TextEnvironment,
)
from sim.protocols.cadence import Recorder
from sim.protocols.ray_train import RayTrainer
from sim.protocols.teacher_student import generation
from sim.protocols.teacher_student.data import window_starts
from sim.protocols.teacher_student.teacher import Teacher
from sim.protocols.teacher_student.trainer import LoopSettings, TrainInputs, train_loop
from sim.runtime.config import ClusterConfig
from sim.runtime.progress import progress_line
from sim.runtime.reservation import Reservation
from sim.runtime.workers import group_size, wait_started

CURVES = ("validation_loss", "validation_bits_per_byte", "train_loss")
PROGRESS = (
    ("train_loss", "train_loss {:.4f}"),
    ("validation_loss", "val_loss {:.4f}"),
    ("validation_bits_per_byte", "val_bpb {:.4f}"),
    ("tokens_per_s", "{:.0f} tok/s"),
    ("alpha", "alpha {:.3f}"),
    ("alpha_greedy", "greedy {:.3f}"),
    ("teacher_wait_s", "teacher wait {:.2f}s"),
)


@dataclass
class TeacherSettings:
    """The teacher's shape and training; trained once per (these, corpus, context) and cached.
    ``weights``: a state-dict file to use instead (its vocabulary must be the corpus's)."""

    layers: int = 4
    width: int = 192
    heads: int = 6
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    weights: str | None = None

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "layers", "width", "heads", "steps", "batch_size")
        checks.positive(self, "lr")
        checks.at_least(self, 0, "seed")


@dataclass
class HeldOut:
    """``prompts`` test-split prompts of ``prompt_length`` tokens (0: none) that the teacher
    continues by ``new_tokens`` tokens, for the agreement measures and the final measures."""

    prompts: int = 0
    prompt_length: int = 16
    new_tokens: int = 48

    def __post_init__(self) -> None:
        checks.at_least(self, 0, "prompts")
        checks.at_least(self, 1, "prompt_length", "new_tokens")


@dataclass
class TeacherStudent:
    """Student training with a teacher: the optimizer (AdamW, warm-up then cosine decay to
    ``min_lr_ratio``), the schedule of evaluations and checkpoints (every ``checkpoint_every``
    steps, a multiple of ``eval_every``), the teacher's bandwidth ``top_k``, and the teacher."""

    resumable: ClassVar[tuple[str, ...]] = ()
    roles: ClassVar[tuple[str, ...]] = ("worker", "teacher")  # the cluster roles it places
    ray_train: ClassVar[bool] = True  # its workers quiet Ray Train's logs (session.WORKER_SETUP)

    steps: int = 200
    batch_size: int = 16
    context: int | None = None  # tokens per window; None: the student's context
    lr: float = 6e-4
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 20
    eval_windows: int = 64
    checkpoint_every: int = 20
    top_k: int | None = 10
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    held_out: HeldOut = field(default_factory=HeldOut)

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "steps", "batch_size", "eval_every", "eval_windows")
        checks.at_least(self, 1, "context", "top_k", optional=True)
        checks.at_least(self, 1, "checkpoint_every")
        checks.at_least(self, 0, "warmup_steps", "weight_decay", "grad_clip")
        checks.positive(self, "lr")
        checks.in_interval(self, 0, 1, "min_lr_ratio", closed=True)
        if self.checkpoint_every % self.eval_every:
            raise ValueError(
                f"checkpoint_every: must be a multiple of eval_every {self.eval_every} "
                f"(got {self.checkpoint_every})"
            )

    def reservation(self, cluster: ClusterConfig, workers: int) -> Reservation:
        """The teacher (its actor, or its generation and measuring tasks) and the student's
        Ray Train workers (``cluster.num_workers``, default 1)."""
        return Reservation({"teacher": 1}, trained=cluster.num_workers or 1)

    def prepare(self, setup: Setup) -> TeacherStudentJob:
        name = "teacher_student"
        corpus = setup.component("env", TextEnvironment, "a text corpus (env=text)", name)
        spec = setup.component("model", LanguageModelSpec, "a language model (model=gpt)", name)
        algorithm = setup.component(
            "algorithm", StudentAlgorithm, "a student algorithm (algorithm=salt, ...)", name
        )
        context = self.context or spec.context
        if context > spec.context:
            raise ConfigError(
                f"protocol.context: {context} tokens exceed the model's context {spec.context} "
                "(model.context)"
            )
        try:
            algorithm.check_steps(self.steps)
        except ValueError as error:
            raise ConfigError(f"algorithm.{error}") from None
        self.check_generation(algorithm.generation(), context)
        held = self.held_out
        if held.prompts and held.prompt_length + held.new_tokens > spec.context:
            raise ConfigError(
                f"protocol.held_out: a prompt of {held.prompt_length} tokens and "
                f"{held.new_tokens} new ones exceed the model's context {spec.context} "
                "(model.context)"
            )
        try:
            streams = corpus.token_streams()
        except FileNotFoundError as error:
            raise CohortError(f"env: {error}") from None
        self.check_sizes(streams, context)
        start_step, history, start = 0, [], None
        if setup.start is not None:
            arrays, meta = setup.start
            start_step, history, start = meta["round"], meta["history"], arrays
            if start_step >= self.steps:
                raise CohortError(f"resume: the checkpoint is already at step {start_step}")
        return TeacherStudentJob(
            settings=self,
            streams=streams,
            spec=spec,
            algorithm=algorithm,
            seed=setup.seed,
            context=context,
            start_step=start_step,
            history=history,
            start=start,
        )

    def check_sizes(self, streams: Any, context: int) -> None:
        """Refuse, before Ray or any training, what the corpus's sizes cannot give: a top-k
        above the vocabulary, a batch of more windows than the train split holds, more
        held-out prompts than the test split can start."""
        if self.top_k is not None and self.top_k > streams.vocab_size:
            raise ConfigError(
                f"protocol.top_k: {self.top_k} exceeds the vocabulary of {streams.vocab_size} "
                "tokens (env.vocab_size)"
            )
        windows = len(window_starts(len(streams.train), context))
        for key, size in (("batch_size", self.batch_size),
                          ("teacher.batch_size", self.teacher.batch_size)):  # fmt: skip
            if size > windows:
                raise ConfigError(
                    f"protocol.{key}: {size} sequences exceed the {windows} windows of "
                    f"{context + 1} tokens in the train split"
                )
        held = self.held_out
        starts = len(streams.test) - held.prompt_length
        if held.prompts > max(starts, 0):
            raise ConfigError(
                f"protocol.held_out.prompts: {held.prompts} exceed the {max(starts, 0)} positions "
                f"a prompt of {held.prompt_length} tokens can start at in the test split"
            )

    def check_generation(self, plan: Generation | None, context: int) -> None:
        """Refuse generated data that cannot fit the run's windows and batches."""
        if plan is None:
            return
        if plan.prompt_length >= context:
            raise ConfigError(
                f"algorithm.prompt_length: a prompt of {plan.prompt_length} tokens leaves nothing "
                f"to generate in a window of {context} (model.context, protocol.context)"
            )
        rows = self.batch_size * plan.share
        if rows != round(rows):
            raise ConfigError(
                f"algorithm: a share of {plan.share} of a batch of {self.batch_size} is not a "
                "whole number of sequences (protocol.batch_size)"
            )
        if plan.source == "student" and self.checkpoint_every % plan.refresh:
            raise ConfigError(
                f"protocol.checkpoint_every: {self.checkpoint_every} must be a multiple of "
                f"algorithm.refresh {plan.refresh} (a resumed run regenerates its block of "
                "student-generated data from the checkpoint)"
            )


@dataclass
class TeacherStudentJob:
    settings: TeacherStudent
    streams: Any  # envs.text.TokenStreams
    spec: Any
    algorithm: StudentAlgorithm
    seed: int
    context: int
    start_step: int
    history: list[dict[str, Any]]
    start: dict[str, np.ndarray] | None

    def run(self, context: RunContext) -> Outcome:
        cluster, settings, streams = context.cluster, self.settings, self.streams
        workers = self.check_batches(cluster)
        inputs = TrainInputs(
            settings=self.loop_settings(workers),
            spec=self.spec,
            vocab_size=streams.vocab_size,
            train=ray.put(streams.train),
            validation=ray.put(streams.validation),
            candidates=window_starts(len(streams.train), self.context),
            eval_starts=window_starts(len(streams.validation), self.context)[
                : settings.eval_windows
            ],
            task_options=cluster.teacher.ray_options(),  # generation and measure tasks
            teacher_spec=self.teacher_spec(),
        )
        trainer = RayTrainer(cluster, workers, train_loop)
        teacher, weights, selected = self.start_teacher(trainer, inputs, context)
        held_out = None
        if settings.held_out.prompts:
            held_out = self.held_out_sequences(teacher, weights, cluster)
        line = functools.partial(step_line, settings.steps)
        recorder = Recorder(context, list(self.history), line)
        context.begin(recorder.history)
        final: dict[str, np.ndarray] = {}

        def on_record(record: dict[str, Any]) -> None:
            record["validation_bits_per_byte"] = streams.bits_per_byte(record["validation_loss"])
            recorder.history.append(record)
            if held_out is None or record["step"] < settings.steps:
                recorder.show(record)  # the last record waits for the final measures

        def on_checkpoint(step: int, arrays: dict[str, np.ndarray]) -> None:
            context.save(arrays, step, recorder.history)
            final.update(arrays)

        student = replace(
            inputs,
            algorithm=self.algorithm,
            teacher=teacher,
            selected=selected,
            teacher_weights=None if weights is None else str(weights),
            start_step=self.start_step,
            start=ray.put(self.start) if self.start is not None else None,
            held_out=None if held_out is None else held_out["train_loop"],
            held_out_prompt=settings.held_out.prompt_length,
        )
        trainer.fit({"inputs": student}, {"record": on_record, "checkpoint": on_checkpoint})
        curves = CURVES
        if held_out is not None:
            print(f"final measures on {settings.held_out.prompts} held-out prompts", flush=True)
            recorder.history[-1].update(
                generation.final_measures(
                    self.algorithm,
                    streams.vocab_size,
                    (self.teacher_spec(), str(weights)),
                    (self.spec, final),
                    held_out["prompts"],
                    settings.held_out.new_tokens,
                    self.seed,
                    cluster.teacher.ray_options(),
                )
            )
            recorder.show(recorder.history[-1])
            curves = (*CURVES, "alpha", "alpha_greedy")
        weights = {k.removeprefix("model/"): v for k, v in sorted(final.items())
                   if k.startswith("model/")}  # fmt: skip
        params = np.concatenate([v.ravel() for v in weights.values()])
        steps = f"{settings.steps} steps"
        return Outcome(params, recorder.history, curves, x="step", steps=steps, weights=weights)

    def check_batches(self, cluster: ClusterConfig) -> int:
        """The number of Ray Train workers; refuses a student or teacher batch they cannot
        split evenly."""
        settings = self.settings
        workers = group_size(cluster.worker, cluster.num_workers or 1, max_useful=1)
        for name, size in (
            ("protocol", settings.batch_size),
            ("teacher", settings.teacher.batch_size),
        ):
            if size % workers:
                raise ConfigError(
                    f"{name}.batch_size: {size} sequences do not split over {workers} workers "
                    "(cluster.num_workers)"
                )
        return workers

    def start_teacher(
        self, trainer: RayTrainer, inputs: TrainInputs, context: RunContext
    ) -> tuple[Any, Path | None, np.ndarray | None]:
        """The teacher actor (None when no step asks it), its weights (trained now if not
        cached; None when nothing needs them), and the windows its steps draw from (SALT_DS:
        those it scores at or above the algorithm's quantile; else None)."""
        settings, cluster = self.settings, context.cluster
        plan = self.algorithm.generation()
        asks_teacher = settings.held_out.prompts > 0 or any(
            self.algorithm.teacher_weight(step, settings.steps) > 0
            for step in range(self.start_step, settings.steps)
        )
        teacher, selected, weights = None, None, None
        if asks_teacher or (plan is not None and plan.source == "teacher"):
            weights = self.teacher_weights(trainer, inputs, context)
        if not asks_teacher:
            return teacher, weights, selected
        teacher = Teacher.options(
            **cluster.teacher.ray_options(),
            name=f"teacher-{uuid.uuid4().hex[:12]}",  # findable: ray.get_actor(name)
            max_restarts=-1,  # restarted from the cached weights; calls in flight retried
            max_task_retries=-1,
        ).remote(self.teacher_spec(), self.streams.vocab_size, str(weights), self.context)
        wait_started([teacher], "teacher", cluster)
        if self.algorithm.selection_quantile is not None:
            scores = self.selection_scores(teacher, weights, inputs.train, inputs.candidates)
            keep = scores >= np.nanquantile(scores, self.algorithm.selection_quantile)
            selected = inputs.candidates[keep]
            if len(selected) < settings.batch_size:
                raise ConfigError(
                    f"algorithm.selection_quantile: keeps {len(selected)} windows, fewer than "
                    f"a batch of {settings.batch_size}"
                )
        return teacher, weights, selected

    def held_out_sequences(self, teacher: Any, weights: Path, cluster: Any) -> dict[str, Any]:
        """Test-split prompts, the teacher's sampled (temperature 1) and greedy continuations of
        them, and its distributions along both (refs, for the training loop)."""
        held = self.settings.held_out
        rows = generation.prompts(
            self.streams.test, held.prompts, held.prompt_length, seeding.rng(self.seed, "held_out")
        )
        model = (self.teacher_spec(), self.streams.vocab_size, str(weights))
        options = cluster.teacher.ray_options()
        loop = {}
        for name, temperature in (("sampled", 1.0), ("greedy", 0.0)):
            refs = generation.generate(
                model, rows, held.new_tokens, temperature, (self.seed, "held_out", name), options
            )
            tokens = np.concatenate(ray.get(refs))
            soft = ray.get(teacher.soft_labels.remote(tokens[:, :-1], None, 1.0))
            loop[name] = (ray.put(tokens), ray.put(soft.probabilities))
        return {"prompts": rows, "train_loop": loop}

    def loop_settings(self, workers: int) -> LoopSettings:
        s = self.settings
        return LoopSettings(
            steps=s.steps,
            batch_size=s.batch_size,
            context=self.context,
            lr=s.lr,
            warmup_steps=s.warmup_steps,
            min_lr_ratio=s.min_lr_ratio,
            weight_decay=s.weight_decay,
            grad_clip=s.grad_clip,
            eval_every=s.eval_every,
            checkpoint_every=s.checkpoint_every,
            top_k=s.top_k,
            threads=1,
            seed=self.seed,
            init_stream="student_init",
            generation=self.algorithm.generation(),
        )

    def teacher_spec(self) -> Any:
        t = self.settings.teacher
        return replace(self.spec, layers=t.layers, width=t.width, heads=t.heads)

    def teacher_key(self) -> str:
        described = {
            "teacher": {k: v for k, v in asdict(self.settings.teacher).items() if k != "weights"},
            "spec": asdict(self.teacher_spec()),
            "context": self.context,
            "corpus": self.streams.folder.name,
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]

    def teacher_weights(
        self, trainer: RayTrainer, inputs: TrainInputs, context: RunContext
    ) -> Path:
        """The teacher's weights: given, cached, or trained now (and cached)."""
        t = self.settings.teacher
        if t.weights is not None:
            path = Path(t.weights)
            if not path.is_file():
                raise CohortError(f"protocol.teacher.weights: no such file {path}")
            rows = safetensors_rows(path, "embed.weight")
            if rows != self.streams.vocab_size:
                raise ConfigError(
                    f"protocol.teacher.weights: the teacher's vocabulary has {rows} tokens, the "
                    f"student's corpus {self.streams.vocab_size} (env.vocab_size)"
                )
            self.check_teacher_shapes(path)
            return path
        path = self.streams.folder / "teachers" / f"{self.teacher_key()}.safetensors"
        if path.is_file():
            try:  # a damaged cache is trained again, with one warning
                safetensors_rows(path, "embed.weight")
                return path
            except ConfigError as error:
                discard_damaged(path, error)
        print(f"training the teacher ({t.steps} steps; cached as {path})", flush=True)
        settings = replace(
            self.loop_settings(trainer.workers),
            steps=t.steps,
            batch_size=t.batch_size,
            lr=t.lr,
            warmup_steps=max(1, t.steps // 10),
            eval_every=max(1, t.steps // 5),
            checkpoint_every=t.steps,
            seed=t.seed,
            init_stream="teacher_init",
            generation=None,  # the teacher learns from the corpus
        )
        state: dict[str, np.ndarray] = {}

        def on_record(record: dict[str, Any]) -> None:
            head = f"[teacher step {record['step']}/{t.steps}]"
            print(progress_line(head, record, PROGRESS, tail=("tokens", "{} tok")), flush=True)

        teacher = replace(inputs, settings=settings, spec=self.teacher_spec())
        trainer.fit(
            {"inputs": teacher},
            {"record": on_record, "checkpoint": lambda step, arrays: state.update(arrays)},
        )
        weights = {k.removeprefix("model/"): np.ascontiguousarray(v) for k, v in state.items()
                   if k.startswith("model/")}  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        safetensors.numpy.save_file(weights, staging)  # named arrays: nothing to unpickle
        staging.replace(path)
        return path

    def check_teacher_shapes(self, path: Path) -> None:
        """Refuse a weights file whose tensors are not the teacher's (names and shapes), in one
        line naming the first that differs, before any actor loads it."""
        model = self.teacher_spec().build(self.streams.vocab_size)
        wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            found = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
        for name in sorted(wanted.keys() | found.keys()):
            if wanted.get(name) != found.get(name):
                raise ConfigError(
                    f"protocol.teacher.weights: {path} does not fit the teacher "
                    f"(protocol.teacher.layers, width, heads): {name} is "
                    f"{found.get(name, 'missing')} in the file, {wanted.get(name, 'absent')} in "
                    "the model"
                )

    def selection_scores(
        self, teacher: Any, weights: Path, train: Any, candidates: np.ndarray
    ) -> np.ndarray:
        """The algorithm's score of every training window (``train``: the stream's ref), cached
        beside the teacher."""
        described = json.dumps(asdict(self.algorithm), sort_keys=True)
        key = hashlib.sha256(described.encode()).hexdigest()[:12]
        path = weights.with_name(f"{weights.stem}.scores.{key}.npy")
        if path.is_file():
            try:
                scores = np.load(path)
                if scores.shape == candidates.shape:
                    return scores
                raise ValueError(f"{scores.shape[0]} scores for {len(candidates)} windows")
            except (OSError, ValueError) as error:
                discard_damaged(path, error)
        print(f"scoring {len(candidates)} training windows with the teacher", flush=True)
        scores = ray.get(teacher.scores.remote(train, candidates, self.algorithm))
        staging = path.with_name(f".{path.name}.{os.getpid()}.npy")
        np.save(staging, scores)  # then renamed: a killed write never leaves half a file
        staging.replace(path)
        return scores


def step_line(steps: int, record: dict[str, Any]) -> str:
    """A record's progress line."""
    head = f"[step {record['step']:>{len(str(steps))}}/{steps}]"
    return progress_line(head, record, PROGRESS, tail=("tokens", "{} tok"))


def safetensors_rows(path: Path, name: str) -> int:
    """The first dimension of tensor ``name`` in the safetensors file ``path`` (read from its
    header alone); a one-line error for a file of another format (a pickled ``.pt``: refused,
    since loading it could run code)."""
    try:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            return int(handle.get_slice(name).get_shape()[0])
    except Exception as error:  # safetensors raises its own error types for a bad header
        raise ConfigError(
            f"protocol.teacher.weights: {path} is not a safetensors file with {name!r} "
            f"({type(error).__name__}); weights are read only from safetensors, never unpickled"
        ) from None
