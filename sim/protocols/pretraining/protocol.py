"""The pre-training protocol: an encoder-decoder (``model``, e.g. ``model=t5``) pre-trained on a
corpus (``env=text``) by an objective (``algorithm``: ``span_corruption``, ``spactor``, ...) on
Ray Train (:mod:`.loop`), then fine-tuned from its snapshots on downstream proxy tasks
(:mod:`.downstream`) as Ray tasks (``cluster.worker`` resources each) — a snapshot's fine-tunings
are submitted as it arrives and run as workers free up.

Records: every ``eval_every`` steps the pre-training figures (train loss and the objective's
parts, validation span-corruption loss on the same corrupted validation windows for every run,
cumulative training FLOPs, tokens per second); after pre-training one record per snapshot with
its step, FLOPs and downstream scores (``documents_accuracy``, ``speaker_accuracy``,
``follows_accuracy``, ``infill_exact_match``, ``infill_loss``). The last
record, the run's final figures, is the last snapshot's, with the final validation loss.

Checkpoints (every ``checkpoint_every`` steps) hold the model, the auxiliary modules, the
optimizer and the snapshots taken so far; a resumed run continues the same batches and
corruptions and fine-tunes every snapshot (its config must be the checkpoint's); a run stopped
while fine-tuning resumes with the fine-tuning.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import ray

from sim import checks, seeding
from sim.errors import CohortError, ConfigError
from sim.interfaces.pretraining import EncoderDecoderSpec, PretrainingObjective
from sim.interfaces.protocol import Outcome, RunContext, Setup
from sim.interfaces.teacher_student import TextEnvironment
from sim.protocols.cadence import Recorder
from sim.protocols.pretraining import downstream
from sim.protocols.pretraining.downstream import SCORES, Downstream
from sim.protocols.pretraining.loop import PretrainSettings, pretrain_loop
from sim.protocols.ray_train import RayTrainer
from sim.protocols.teacher_student.data import window_starts, window_tokens
from sim.runtime.config import ClusterConfig
from sim.runtime.progress import progress_line
from sim.runtime.reservation import Reservation
from sim.runtime.workers import group_size
from sim.training.span_corruption import Vocabulary, span_batch

CURVES = ("validation_loss", "train_loss", *SCORES)
PROGRESS = (
    ("train_loss", "train_loss {:.4f}"),
    ("sc_loss", "sc {:.4f}"),
    ("rtd_loss", "rtd {:.4f}"),
    ("mlm_loss", "mlm {:.4f}"),
    ("validation_loss", "val_sc {:.4f}"),
    ("flops", "{:.3g} FLOPs"),
    ("tokens_per_s", "{:.0f} tok/s"),
    *((score, score + " {:.4f}") for score in SCORES),
)


@dataclass
class Pretraining:
    """Pre-training for ``steps`` steps of ``batch_size`` examples whose corrupted inputs are
    ``inputs_length`` tokens (None: the model's context); AdamW at T5's inverse-square-root
    schedule after ``warmup_steps``; evaluations every ``eval_every`` steps on ``eval_windows``
    validation windows; checkpoints every ``checkpoint_every``; then ``downstream``."""

    resumable: ClassVar[tuple[str, ...]] = ()
    roles: ClassVar[tuple[str, ...]] = ("worker",)
    ray_train: ClassVar[bool] = True

    steps: int = 400
    batch_size: int = 32
    inputs_length: int | None = None
    lr: float = 1e-3
    warmup_steps: int = 40
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_windows: int = 64
    checkpoint_every: int = 100
    downstream: Downstream = field(default_factory=Downstream)

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "steps", "batch_size", "eval_every", "eval_windows")
        checks.at_least(self, 1, "checkpoint_every")
        checks.at_least(self, 2, "inputs_length", optional=True)
        checks.at_least(self, 0, "warmup_steps", "weight_decay", "grad_clip")
        checks.positive(self, "lr")
        if self.checkpoint_every % self.eval_every:
            raise ValueError(
                f"checkpoint_every: must be a multiple of eval_every {self.eval_every} "
                f"(got {self.checkpoint_every})"
            )

    def snapshot_steps(self) -> tuple[int, ...]:
        """The steps whose model is fine-tuned; each must be an evaluation step."""
        steps = sorted({round(a * self.steps) for a in self.downstream.at})
        if not steps:
            raise ConfigError(
                "protocol.downstream.at: must name at least 1.0, the finished model (got [])"
            )
        off = [s for s in steps if s == 0 or (s % self.eval_every and s != self.steps)]
        if off:
            raise ConfigError(
                f"protocol.downstream.at: steps {off} of {self.steps} are not evaluation steps "
                f"(multiples of protocol.eval_every {self.eval_every}, or the last)"
            )
        if steps[-1] != self.steps:
            raise ConfigError(
                f"protocol.downstream.at: must include 1.0, the finished model (got "
                f"{list(self.downstream.at)}): its scores are the run's final figures"
            )
        return tuple(steps)

    def reservation(self, cluster: ClusterConfig, workers: int) -> Reservation:
        """The Ray Train workers (``cluster.num_workers``, default 1) and one fine-tuning task
        of a snapshot beside them."""
        return Reservation({"worker": 1}, trained=cluster.num_workers or 1)

    def downstream_data(
        self, held_out: list[np.ndarray], raw: int, context: int, vocab: Vocabulary, tokenizer: Any
    ) -> dict[str, downstream.TaskData]:
        """Each downstream task's data from the held-out documents (token ids): passages of
        ``raw`` tokens, inputs of at most ``context``."""
        settings = self.downstream
        passages = downstream.task_data(held_out, raw, settings.test_fraction, settings.documents)
        data = {}
        for task in settings.tasks:
            if task == "follows":
                data[task] = downstream.follows_data(passages, context, vocab.first_sentinel)
            elif task == "speaker":
                texts = [tokenizer.decode(doc.tolist()) for doc in held_out]
                data[task] = downstream.speaker_data(
                    texts,
                    lambda text: tokenizer.encode(text).ids,
                    settings.speakers,
                    settings.speech_tokens,
                    settings.test_fraction,
                )
            else:
                data[task] = passages
        return data

    def prepare(self, setup: Setup) -> PretrainingJob:
        name = "pretraining"
        corpus = setup.component("env", TextEnvironment, "a text corpus (env=text)", name)
        spec = setup.component("model", EncoderDecoderSpec, "an encoder-decoder (model=t5)", name)
        objective = setup.component(
            "algorithm", PretrainingObjective, "a pre-training objective (algorithm=spactor)", name
        )
        length = self.inputs_length or spec.context
        if length > spec.context:
            raise ConfigError(
                f"protocol.inputs_length: {length} tokens exceed the model's context "
                f"{spec.context} (model.context)"
            )
        try:
            raw, inputs, targets, sentinels = objective.lengths(length)
        except ValueError as error:
            raise ConfigError(f"algorithm.{error}") from None
        if inputs > length:
            raise ConfigError(
                f"protocol.inputs_length: {length} tokens are too few for span corruption (one "
                "kept token, one span, its sentinel and eos)"
            )
        if targets > spec.context:
            raise ConfigError(
                f"algorithm: targets of {targets} tokens exceed the model's context {spec.context}"
            )
        try:
            objective.check_steps(self.steps)
            objective.auxiliary(spec, Vocabulary(257, 1))  # its shape's checks, before Ray
        except ValueError as error:
            raise ConfigError(f"algorithm.{error}") from None
        snapshots = self.snapshot_steps()
        try:
            streams = corpus.token_streams()
        except FileNotFoundError as error:
            raise CohortError(f"env: {error}") from None
        vocab = Vocabulary(streams.vocab_size, sentinels)
        held_out = [
            doc for split in (streams.validation, streams.test)
            for doc in downstream.split_at(split, vocab.eos)
        ]  # fmt: skip
        try:
            data = self.downstream_data(held_out, raw, spec.context, vocab, streams.tokenizer())
        except ValueError as error:
            raise ConfigError(f"protocol.downstream: {error}") from None
        for task, part in data.items():
            if len(part.train) < self.downstream.batch_size:
                raise ConfigError(
                    f"protocol.downstream.batch_size: {self.downstream.batch_size} is more than "
                    f"the {task} task's {len(part.train)} training inputs"
                )
        resumed = Resumed.of(setup.start)
        return PretrainingJob(
            settings=self,
            streams=streams,
            spec=spec,
            objective=objective,
            seed=setup.seed,
            vocab=vocab,
            inputs_length=length,
            snapshots=snapshots,
            data=data,
            resumed=resumed,
        )


@dataclass(frozen=True)
class Resumed:
    """Where a run starts: step 0, or a checkpoint's step, records, training state (model,
    auxiliary, optimizer) and the snapshots taken so far (``snapshot/<step>/model/<name>``)."""

    step: int = 0
    history: tuple[dict[str, Any], ...] = ()
    state: dict[str, np.ndarray] | None = None
    snapshots: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def of(cls, start: Any) -> Resumed:
        if start is None:
            return cls()
        arrays, meta = start
        snapshots: dict[int, dict[str, np.ndarray]] = {}
        for name, value in arrays.items():
            if name.startswith("snapshot/"):
                _, step, key = name.split("/", 2)
                snapshots.setdefault(int(step), {})[key] = value
        state = {k: v for k, v in arrays.items() if not k.startswith("snapshot/")}
        return cls(meta["round"], tuple(meta["history"]), state, snapshots)

    @property
    def flops(self) -> float:
        return self.history[-1]["flops"] if self.history else 0.0


@dataclass
class PretrainingJob:
    settings: Pretraining
    streams: Any  # envs.text.TokenStreams
    spec: Any
    objective: Any
    seed: int
    vocab: Vocabulary
    inputs_length: int
    snapshots: tuple[int, ...]
    data: dict[str, downstream.TaskData]  # per task
    resumed: Resumed

    def run(self, context: RunContext) -> Outcome:
        cluster, settings = context.cluster, self.settings
        workers = group_size(cluster.worker, cluster.num_workers or 1, max_useful=1)
        if settings.batch_size % workers:
            raise ConfigError(
                f"protocol.batch_size: {settings.batch_size} examples do not split over "
                f"{workers} workers (cluster.num_workers)"
            )
        line = functools.partial(step_line, settings.steps)
        recorder = Recorder(context, list(self.resumed.history), line)
        context.begin(recorder.history)
        final: dict[str, np.ndarray] = {}
        refs = {id(part): ray.put(part) for part in self.data.values()}  # passages once
        data = {task: refs[id(part)] for task, part in self.data.items()}
        snapshots = Snapshots(self, data, cluster.worker.ray_options())

        def on_checkpoint(step: int, arrays: dict[str, np.ndarray]) -> None:
            context.save({**arrays, **snapshots.arrays()}, step, recorder.history)
            final.update(arrays)

        for step, arrays in sorted(self.resumed.snapshots.items()):
            snapshots.fine_tune(step, arrays)
        if self.resumed.step < settings.steps:
            handlers = {
                "record": recorder.record,
                "snapshot": snapshots.fine_tune,
                "checkpoint": on_checkpoint,
            }
            RayTrainer(cluster, workers, pretrain_loop).fit(self.loop_config(), handlers)
        else:  # stopped while fine-tuning: pre-training is done, its snapshots are checkpointed
            final.update(self.resumed.state)
        tasks = ", ".join(settings.downstream.tasks)
        print(f"fine-tuning {len(snapshots.pending)} snapshots on {tasks}", flush=True)
        at_step = {r["step"]: r for r in recorder.history}
        for step in sorted(snapshots.pending):
            record = {"step": step, "tokens": at_step[step]["tokens"],
                      "flops": at_step[step]["flops"], **snapshots.scores(step)}  # fmt: skip
            if step == settings.steps:
                record["validation_loss"] = at_step[step]["validation_loss"]
            recorder.history.append(record)
            context.record(record, progress_line(f"[downstream, step {step}]", record, *LINE))
        weights = {
            k.removeprefix("model/model."): v
            for k, v in sorted(final.items())
            if k.startswith("model/model.")
        }  # fmt: skip (the encoder-decoder alone)
        params = np.concatenate([v.ravel() for v in weights.values()])
        steps = f"{settings.steps} steps"
        return Outcome(params, recorder.history, CURVES, x="step", steps=steps, weights=weights)

    def loop_config(self) -> dict[str, Any]:
        """What :func:`pretrain_loop` reads: the settings, the model and objective, the corpus
        (train windows, the validation batch every run is measured on) and where it starts."""
        settings, streams = self.settings, self.streams
        raw = self.objective.lengths(self.inputs_length)[0]
        eval_starts = window_starts(len(streams.validation), raw - 1)[: settings.eval_windows]
        validation = span_batch(  # the same corrupted windows for every run, objective and seed
            window_tokens(streams.validation, eval_starts, raw - 1),
            self.objective.noise_density,
            self.objective.mean_span,
            self.vocab,
            seeding.rng(0, "validation"),
        )
        return dict(
            settings=PretrainSettings(
                steps=settings.steps,
                batch_size=settings.batch_size,
                inputs_length=self.inputs_length,
                lr=settings.lr,
                warmup_steps=settings.warmup_steps,
                weight_decay=settings.weight_decay,
                grad_clip=settings.grad_clip,
                eval_every=settings.eval_every,
                checkpoint_every=settings.checkpoint_every,
                snapshots=self.snapshots,
                threads=1,
                seed=self.seed,
            ),
            objective=self.objective,
            spec=self.spec,
            vocab=self.vocab,
            train=ray.put(streams.train),
            validation=validation,
            candidates=window_starts(len(streams.train), raw - 1),
            start=None if self.resumed.state is None else ray.put(self.resumed.state),
            start_step=self.resumed.step,
            start_flops=self.resumed.flops,
        )


class Snapshots:
    """The snapshots of a pre-training run: each fine-tuned on the downstream tasks as soon as it
    is taken (Ray tasks, beside the training), and kept for the checkpoint."""

    def __init__(self, job: PretrainingJob, data: dict[str, Any], options: dict[str, Any]):
        self.job, self.data, self.task = (
            job,
            data,
            ray.remote(downstream.finetune).options(**options),
        )
        self.pending: dict[int, dict[str, Any]] = {}  # step -> task name -> its scores (a ref)
        self.taken: dict[int, dict[str, np.ndarray]] = {}

    def fine_tune(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        job = self.job
        self.taken[step] = arrays
        ref = ray.put(arrays)
        corruption = (job.objective.noise_density, job.objective.mean_span)
        self.pending[step] = {
            name: self.task.remote(name, job.spec, job.vocab, ref, self.data[name],
                                   job.settings.downstream, corruption, job.seed)
            for name in job.settings.downstream.tasks
        }  # fmt: skip

    def arrays(self) -> dict[str, np.ndarray]:
        """The snapshots taken so far, as checkpoint arrays (``snapshot/<step>/<name>``)."""
        return {f"snapshot/{s}/{k}": v for s, snapshot in self.taken.items()
                for k, v in snapshot.items()}  # fmt: skip

    def scores(self, step: int) -> dict[str, float]:
        """The downstream scores of ``step``'s snapshot (waits for its tasks)."""
        return {k: v for ref in self.pending[step].values() for k, v in ray.get(ref).items()}


LINE = (PROGRESS, (), ("tokens", "{} tok"))  # progress_line's fields, counters and tail


def step_line(steps: int, record: dict[str, Any]) -> str:
    """A pre-training record's progress line."""
    head = f"[step {record['step']:>{len(str(steps))}}/{steps}]"
    return progress_line(head, record, *LINE)
