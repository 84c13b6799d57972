"""The synthetic-data protocol (``protocol=synthesis``): a frozen pretrained LM (``model``,
e.g. ``model=smollm2``) is prompted by a method (``algorithm``: a trained soft prompt, a hard
prompt, or real data as the reference) to generate ``samples`` examples like a target domain's
(``env=target_text``); the set is judged by MAUVE against held-out real examples and by the loss
on held-out real text of a small GPT trained on it.

1. Generator actors (``cluster.generator`` resources each) load the frozen model
   (:mod:`.generator`); its weights' SHA-256 is taken before and after.
2. A soft prompt is trained on the driver for ``steps`` steps of ``batch_size`` target examples
   (drawn from the target sample of ``train_examples``): each step's prompts are made by the
   prompt module, their gradient comes from the generators in micro-batches of ``micro_batch``
   examples summed in a fixed order, so the numbers do not depend on the number of generators.
   Every ``eval_every`` steps (and at the last) the held-out prompt loss: nats per token of
   ``eval_examples`` validation examples (training examples outside the target sample) given
   their prompts; with ``patience``, training stops after that many evaluations without a
   lower one and the prompt of the lowest is kept (early stopping). At each step of
   ``generate_at`` a set is also generated from the prompt of that step (MAUVE and downstream
   loss against prompt training). The run is checkpointed after each held-out evaluation and
   each ``generate_at`` set (:class:`Resumed`): ``resume=true`` continues it from there, to the
   same numbers as a run never stopped.
3. ``samples`` examples are generated in batches of ``generation_batch``; batch b's prompts and
   sampling are seeded by ``(seed, "generate", b)``, whichever generator runs it.
4. MAUVE (features by ``featurizer``) against ``samples`` held-out examples, and the
   downstream loss (:class:`~.evaluation.Downstream`), as Ray tasks (``cluster.worker``), for
   each set once the generators are gone.

Every example, real or synthetic, is at most ``length`` tokens of the generator's tokenizer. The
samples are written to ``artifacts/samples.jsonl`` (a ``generate_at`` set's to
``samples_<step>.jsonl``). Records: the prompt's training loss every ``log_every`` steps and its
held-out loss (``validation_loss``) every ``eval_every``, one record per ``generate_at`` set
with its scores, then the final set's record (``step``: the steps trained; with ``patience``,
``prompt_step``: the kept prompt's). Methods without a trained prompt (hard prompts, real data)
ignore the prompt-training fields.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import ray
import torch

from sim import checks, seeding
from sim.data_dirs import discard_damaged
from sim.errors import CohortError, ConfigError
from sim.interfaces.protocol import Outcome, RunContext, Setup
from sim.interfaces.synthesis import (
    FrozenLMSpec,
    HardPromptMethod,
    ReferenceMethod,
    SoftPromptMethod,
    TargetDomain,
)
from sim.interfaces.teacher_student import LanguageModelSpec
from sim.protocols.cadence import Cadence, EarlyStopping, Recorder
from sim.protocols.ray_train import load_state, state_arrays
from sim.protocols.synthesis import evaluation
from sim.protocols.synthesis.evaluation import FEATURE_CHUNK, Downstream
from sim.protocols.synthesis.generator import FrozenLM
from sim.runtime.config import ClusterConfig
from sim.runtime.progress import progress_line
from sim.runtime.reservation import Reservation, fits, resources_of
from sim.runtime.workers import group_size, wait_started
from sim.training.features import check_featurizer
from sim.training.tokenizer import train_tokenizer

METHODS = (SoftPromptMethod, HardPromptMethod, ReferenceMethod)
TIME = ("time_s", "{:.1f}s")
PROGRESS = (
    ("train_loss", "train_loss {:.4f}"),
    ("validation_loss", "held-out {:.4f}"),
    ("mauve", "mauve {:.4f}"),
    ("downstream_loss", "downstream_loss {:.4f}"),
    ("empty_fraction", "empty {:.3f}"),
    ("distinct_fraction", "distinct {:.3f}"),
)


@dataclass
class Synthesis:
    """``samples`` synthetic examples of at most ``length`` tokens per run; a soft prompt trained
    for ``steps`` steps of ``batch_size`` (Adam, ``lr``) on ``train_examples`` target examples;
    MAUVE needs at least ``min_mauve_samples`` per side (see :mod:`.evaluation`)."""

    resumable: ClassVar[tuple[str, ...]] = ()
    roles: ClassVar[tuple[str, ...]] = ("generator", "worker")

    samples: int = 1000
    length: int = 48
    train_examples: int = 2000
    steps: int = 60
    batch_size: int = 8
    micro_batch: int = 4
    lr: float = 0.01
    log_every: int = 5
    eval_every: int | None = None  # None: no held-out prompt loss
    eval_examples: int = 128
    patience: int | None = None  # None: train every step
    generate_at: list[int] = field(default_factory=list)
    generation_batch: int = 50
    generators: int | None = None  # None: as many as the cluster holds
    featurizer: str = "all-minilm-l6-v2"
    min_mauve_samples: int = 1000
    downstream: Downstream = field(default_factory=Downstream)

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "samples", "length", "train_examples", "steps", "batch_size")
        checks.at_least(self, 1, "micro_batch", "log_every", "generation_batch")
        checks.at_least(self, 1, "generators", optional=True)
        checks.at_least(self, 1, "eval_every", "patience", optional=True)
        checks.at_least(self, 1, "eval_examples")
        if self.patience is not None and self.eval_every is None:
            raise ValueError("patience: early stopping needs the held-out loss (eval_every)")
        at = list(self.generate_at)
        if at != sorted(set(at)) or any(not 1 <= s < self.steps for s in at):
            raise ValueError(
                f"generate_at: increasing steps in 1..{self.steps - 1} (the final set is the "
                f"last step's; got {at})"
            )
        checks.at_least(self, 20, "min_mauve_samples")  # k-means needs a few points per cluster
        checks.positive(self, "lr")
        if self.samples < self.min_mauve_samples:
            raise ValueError(
                f"samples: {self.samples} is below MAUVE's minimum of {self.min_mauve_samples} per "
                "side (protocol.min_mauve_samples): with fewer, two halves of one corpus already "
                "score far below 1 (0.72 at 500 with MiniLM features)"
            )
        if self.batch_size > self.train_examples:
            raise ValueError(
                f"batch_size: {self.batch_size} exceeds the {self.train_examples} train_examples"
            )

    def reservation(self, cluster: ClusterConfig, workers: int) -> Reservation:
        """``protocol.generators`` (else ``workers``) generators, and ``workers`` featurizing
        and downstream tasks. The tasks run before the generators start and after they are
        gone, so where a generator's bundle holds a task's resources they share the bundles."""
        generators = self.generators or workers
        generator, worker = resources_of(cluster.generator), resources_of(cluster.worker)
        if fits(worker, generator):
            share = {"generator": generators, "worker": generators}
            return Reservation({"generator": generators}, share=share)
        return Reservation({"generator": generators, "worker": workers})

    def prepare(self, setup: Setup) -> SynthesisJob:
        name = "synthesis"
        domain = setup.component("env", TargetDomain, "a target domain (env=target_text)", name)
        spec = setup.component(
            "model", FrozenLMSpec, "a frozen pretrained LM (model=smollm2)", name
        )
        learner = setup.component(
            "learner", LanguageModelSpec, "a downstream LM (learner=downstream_gpt)", name
        )
        method = setup.components.get("algorithm")
        if not isinstance(method, METHODS):
            raise ConfigError(
                "algorithm: protocol=synthesis needs a prompting method (algorithm=softsrv, "
                f"hard_instruction, hard_few_shot, real_data; got {type(method).__name__})"
            )
        try:
            spec.locate()
            domain.locate()
        except FileNotFoundError as error:
            raise CohortError(f"{'model' if 'wheel' in str(error) else 'env'}: {error}") from None
        self.check_featurizer("protocol.featurizer", self.featurizer)
        if isinstance(method, SoftPromptMethod):
            if method.uses_features:
                self.check_featurizer("algorithm.featurizer", method.featurizer)
            if method.tokens + self.length > spec.context:
                raise ConfigError(
                    f"algorithm.tokens: a prompt of {method.tokens} tokens and examples of "
                    f"{self.length} (protocol.length) exceed the model's context {spec.context}"
                )
        if self.length >= spec.context:
            raise ConfigError(
                f"protocol.length: {self.length} tokens leave no room for a prompt in the model's "
                f"context {spec.context}"
            )
        examples = domain.examples()
        needed = {
            "train_examples": (self.train_examples, len(examples.train), "training"),
            "samples": (self.samples, len(examples.held_out), "held-out"),
            "downstream.eval_examples": (
                self.downstream.eval_examples,
                len(examples.held_out),
                "held-out",
            ),
        }
        if isinstance(method, ReferenceMethod) and self.samples > self.train_examples:
            raise ConfigError(
                f"protocol.samples: real_data draws {self.samples} distinct examples from the "
                f"{self.train_examples} target examples (protocol.train_examples)"
            )
        if getattr(method, "shots", 0) > self.train_examples:
            raise ConfigError(
                f"algorithm.shots: {method.shots} exceed the {self.train_examples} target examples "
                "(protocol.train_examples)"
            )
        for key, (count, available, split) in needed.items():
            if count > available:
                raise ConfigError(
                    f"protocol.{key}: {count} exceeds the domain's {available} {split} examples"
                )
        rest = len(examples.train) - self.train_examples  # the validation functions' source
        if self.eval_every is not None and self.eval_examples > rest:
            raise ConfigError(
                f"protocol.eval_examples: {self.eval_examples} exceeds the {rest} training "
                f"examples outside the target sample of {self.train_examples}"
            )
        return SynthesisJob(
            settings=self,
            domain=domain,
            spec=spec,
            method=method,
            learner=learner,
            seed=setup.seed,
            examples=examples,
            resumed=Resumed.of(setup.start),
        )

    @staticmethod
    def check_featurizer(key: str, name: str) -> None:
        try:
            check_featurizer(name)
        except ValueError as error:
            raise ConfigError(f"{key}: {error}") from None
        except FileNotFoundError as error:
            raise CohortError(f"{key}: {error}") from None


def features(name: str, texts: list[str], cluster: Any, cache: Path | None) -> np.ndarray:
    """Features of ``texts`` computed by Ray tasks (``cluster.worker``) on whole chunks; with a
    ``cache`` folder, kept there by a hash of the featurizer and the texts."""
    path = None
    if cache is not None:
        key = hashlib.sha256(json.dumps([name, texts]).encode()).hexdigest()[:24]
        path = cache / f"{name}-{key}.npy"
    if path is not None and path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.ndim == 2 and len(cached) == len(texts):
                return cached
            raise ValueError(f"shape {cached.shape} for {len(texts)} texts")
        except (OSError, ValueError) as error:  # a damaged file: rebuilt, one warning
            discard_damaged(path, error)
    chunks = -(-len(texts) // FEATURE_CHUNK)
    tasks = group_size(cluster.worker, None, max_useful=chunks)
    bounds = [FEATURE_CHUNK * (chunks * i // tasks) for i in range(tasks + 1)]
    task = ray.remote(evaluation.featurize_chunks).options(**cluster.worker.ray_options())
    refs = [
        task.remote(name, texts[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if a < b
    ]
    found = np.concatenate(ray.get(refs))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}.npy")
        np.save(staging, found)
        staging.replace(path)
    return found


@dataclass(frozen=True)
class Resumed:
    """Where prompt training starts: step 0, or a checkpoint's step and records, with its
    arrays: the prompt module and its Adam state (``model/``, ``optimizer/``), the prompt of the
    lowest held-out loss so far (``best/``) and the ``generate_at`` sets generated so far
    (``set/<step>``: their texts as JSON bytes)."""

    step: int = 0
    history: tuple[dict[str, Any], ...] = ()
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, start: Any) -> Resumed:
        if start is None:
            return cls()
        arrays, meta = start
        return cls(meta["round"], tuple(meta["history"]), dict(arrays))

    def part(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays whose names start with ``prefix`` (e.g. ``"set/"``), by the rest."""
        return {k.removeprefix(prefix): v for k, v in self.arrays.items() if k.startswith(prefix)}

    def sets(self) -> dict[int, list[str]]:
        return {int(step): json.loads(v.tobytes()) for step, v in self.part("set/").items()}

    def restore(self, module: Any, optimizer: Any, stopping: EarlyStopping) -> float:
        """The checkpoint's prompt, Adam state and early stopping's state put back; the
        seconds of prompt training it had done."""
        if not self.step:
            return 0.0
        load_state(module, optimizer, self.arrays)
        for record in self.history:  # the lowest held-out loss, as the loop found it
            if "validation_loss" in record:
                stopping.update(record["step"], record["validation_loss"], lambda: None)
        best = self.part("best/")
        stopping.state = {k: torch.tensor(v) for k, v in best.items()} if best else None
        return max((r["time_s"] for r in self.history if "time_s" in r), default=0.0)


def checkpoint_arrays(
    module: Any, optimizer: Any, stopping: EarlyStopping, sets: dict[int, list[str]]
) -> dict[str, np.ndarray]:
    """What :class:`Resumed` reads back: the prompt, its Adam state, the kept prompt and the
    sets generated so far."""
    arrays = state_arrays(module, optimizer)
    if stopping.state is not None:
        arrays |= {f"best/{k}": v.numpy() for k, v in stopping.state.items()}
    for step, texts in sets.items():
        arrays[f"set/{step}"] = np.frombuffer(json.dumps(texts).encode(), dtype=np.uint8)
    return arrays


@dataclass
class SynthesisJob:
    settings: Synthesis
    domain: Any
    spec: Any
    method: Any
    learner: Any  # the downstream LM's shape
    seed: int
    examples: Any  # envs.target_text.TargetExamples
    resumed: Resumed = field(default_factory=Resumed)

    @property
    def feature_cache(self) -> Path:
        return self.domain.cache_folder() / "features"

    def truncate(self, tokenizer: Any, texts: list[str]) -> tuple[list[np.ndarray], list[str]]:
        """Each text's first ``length`` tokens (ids, with the end-of-text token when the text
        ends within them) and those tokens as text."""
        length, eos = self.settings.length, tokenizer.eos_token_id
        ids = tokenizer(texts, add_special_tokens=False).input_ids
        cut = [np.asarray(row[:length], dtype=np.int64) for row in ids]
        targets = [
            np.r_[c, eos] if len(row) < length else c for c, row in zip(cut, ids, strict=True)
        ]
        return targets, tokenizer.batch_decode(cut)

    def run(self, context: RunContext) -> Outcome:
        settings, seed, cluster = self.settings, self.seed, context.cluster
        tokenizer = self.spec.tokenizer()
        train, held_out = self.examples.train, self.examples.held_out
        pool_rows = np.sort(seeding.rng(seed, "target_sample").choice(
            len(train), settings.train_examples, replace=False))  # fmt: skip
        pool_ids, pool = self.truncate(tokenizer, [train[i] for i in pool_rows])
        real_rows = seeding.rng(seed, "mauve_real").choice(
            len(held_out), settings.samples, replace=False
        )
        _, real = self.truncate(tokenizer, [held_out[i] for i in real_rows])
        eval_rows = seeding.rng(0, "downstream_eval").choice(  # one evaluation set for every run
            len(held_out), settings.downstream.eval_examples, replace=False)  # fmt: skip
        _, eval_texts = self.truncate(tokenizer, [held_out[i] for i in eval_rows])
        uses_generator = not isinstance(self.method, ReferenceMethod)
        count = self.generator_count(cluster) if uses_generator else 0
        history: list[dict[str, Any]] = list(self.resumed.history)
        context.begin(history)
        started = time.perf_counter()
        sets = self.resumed.sets()  # generate_at's sets, by step
        module, pool_features, summary, trained = None, None, {}, {}
        if not uses_generator:
            texts = self.method.samples(pool, settings.samples, seeding.rng(seed, "reference"))
        else:
            soft = isinstance(self.method, SoftPromptMethod)
            held = None
            if soft:  # features before the generators take the CPUs
                held = self.validation(tokenizer, cluster, pool_rows)
                if self.method.uses_features:
                    found = features(self.method.featurizer, pool, cluster, self.feature_cache)
                    pool_features = torch.as_tensor(found)
            generators = self.start_generators(cluster, count)
            before = ray.get([g.digest.remote() for g in generators])

            def generate(module: Any) -> list[str]:
                return self.generate(generators, tokenizer, module, pool, pool_features)

            if soft:
                module, trained = self.train_prompt(
                    generators, pool_features, pool_ids, held, context, history, sets, generate
                )
            texts = sets.get(trained.get("prompt_step")) or generate(module)
            after = ray.get([g.digest.remote() for g in generators])
            for generator in generators:
                ray.kill(generator)
            if set(before) != {before[0]} or after != before:
                raise CohortError("the frozen generator's weights changed during the run")
            summary["generator_sha256"] = before[0]
        generated_s = time.perf_counter() - started
        score = functools.partial(self.evaluate, real=real, eval_texts=eval_texts, pool=pool,
                                  cluster=cluster)  # fmt: skip
        scored = self.score_sets(sets, score, context, history, started)
        context.write("samples.jsonl", jsonl(texts))
        step = trained.get("prompt_step")
        record = {**(scored[step] if step in scored else score(texts)), "step": 0, **trained}
        record.update(generation_s=round(generated_s, 1),
                      time_s=round(time.perf_counter() - started, 1))  # fmt: skip
        history.append(record)
        context.record(record, progress_line("[synthetic set]", record, PROGRESS, tail=TIME))
        params = (
            np.concatenate([p.detach().numpy().ravel() for p in module.parameters()])
            if module is not None
            else np.zeros(0, np.float32)
        )
        curves = ()
        if module is not None:
            curves = ("train_loss", "validation_loss", "mauve", "downstream_loss")
        steps = f"{settings.samples} samples"
        weights = None  # the prompt module's (the generator is frozen and never written)
        if module is not None:
            weights = {k: v.detach().numpy() for k, v in module.named_parameters()}
        return Outcome(
            params, history, curves, x="step", steps=steps, summary=summary, weights=weights
        )

    @staticmethod
    def score_sets(sets, score, context, history, started) -> dict[int, dict[str, Any]]:
        """Score each ``generate_at`` set (``score(texts)``) in step order, write and record it;
        the scores by step."""
        scored = {}
        for step, texts in sorted(sets.items()):
            context.write(f"samples_{step}.jsonl", jsonl(texts))
            scored[step] = score(texts)
            record = {"step": step, **scored[step],
                      "time_s": round(time.perf_counter() - started, 1)}  # fmt: skip
            history.append(record)
            context.record(record, progress_line(f"[set at step {step}]", record, PROGRESS,
                                                 tail=TIME))  # fmt: skip
        return scored

    def validation(self, tokenizer: Any, cluster: Any, pool_rows: np.ndarray):
        """The held-out prompt loss's ``eval_examples`` functions: drawn from the training split
        outside the run's target sample (never trained on, and apart from the held-out sets of
        MAUVE and the downstream loss), as token ids, and their features when the prompt reads
        them (None otherwise); None without ``eval_every``."""
        if self.settings.eval_every is None:
            return None
        train = self.examples.train
        rest = np.setdiff1d(np.arange(len(train)), pool_rows)
        rows = seeding.rng(self.seed, "prompt_eval").choice(
            rest, self.settings.eval_examples, replace=False
        )
        ids, texts = self.truncate(tokenizer, [train[i] for i in rows])
        if not self.method.uses_features:
            return ids, None
        found = features(self.method.featurizer, texts, cluster, self.feature_cache)
        return ids, torch.as_tensor(found)

    def generator_count(self, cluster: Any) -> int:
        """``protocol.generators``, checked to fit, else as many as fit (at most 64)."""
        return group_size(
            cluster.generator, self.settings.generators, 64, "generator", "protocol.generators"
        )

    def start_generators(self, cluster: Any, count: int) -> list[Any]:
        actor = ray.remote(FrozenLM).options(**cluster.generator.ray_options())
        generators = [actor.remote(self.spec, cluster.generator.num_cpus) for _ in range(count)]
        wait_started(generators, "generator", cluster)
        return generators

    def train_prompt(self, generators, pool_features, pool_ids, held, context, history, sets,
                     generate):  # fmt: skip
        """Adam on the prompt module's parameters; each step's gradient is the sum over
        micro-batches (in order) of the generators' gradients with respect to the prompts.
        After each step of ``generate_at``, ``sets[step] = generate(module)``; a checkpoint
        after each of those and each held-out evaluation. Returns the module (with
        ``patience``: the prompt of the lowest held-out loss) and the final record's fields:
        ``step``, the steps trained, and with ``patience`` ``prompt_step``, the kept prompt's."""
        settings, method, seed = self.settings, self.method, self.seed
        scale = ray.get(generators[0].embedding_scale.remote())
        torch.manual_seed(seeding.torch_seed(seed, "prompt_init"))
        dims = 0 if pool_features is None else pool_features.shape[1]
        module = method.build(self.spec.width, dims, scale)
        optimizer = torch.optim.Adam(module.parameters(), lr=settings.lr)
        cadence = Cadence(settings.steps, settings.log_every)
        held_out = None if held is None else Cadence(settings.steps, settings.eval_every)
        stopping = EarlyStopping(settings.eval_every or 1, settings.patience)
        recorder = Recorder(context, history, functools.partial(prompt_line, settings.steps))
        started = time.perf_counter() - self.resumed.restore(module, optimizer, stopping)
        step = self.resumed.step
        while step < settings.steps and not stopping.stops(step):
            step += 1
            rows = seeding.rng(seed, "prompt_batch", step - 1).choice(
                len(pool_ids), settings.batch_size, replace=False)  # fmt: skip
            z = None if pool_features is None else pool_features[rows]
            prompts = module(z, len(rows))
            results = self.spread(generators, "prompt_gradients", prompts.detach().numpy(),
                                  [pool_ids[r] for r in rows])  # fmt: skip
            tokens = sum(r[1] for r in results)
            loss = sum(r[0] for r in results) / tokens
            optimizer.zero_grad(set_to_none=True)
            prompts.backward(torch.as_tensor(np.concatenate([r[2] for r in results])) / tokens)
            optimizer.step()
            record = {"train_loss": loss} if step == 1 or cadence.evaluates(step) else {}
            if held_out is not None and held_out.evaluates(step):
                record["validation_loss"] = self.held_out_loss(generators, module, held)
                try:
                    kept = functools.partial(copy.deepcopy, module.state_dict())
                    stopping.update(step, record["validation_loss"], kept)
                except ValueError as error:
                    raise CohortError(
                        f"the held-out prompt loss is not finite ({error}): a lower protocol.lr?"
                    ) from None
            if record:
                time_s = round(time.perf_counter() - started, 1)
                recorder.record({"step": step, **record, "time_s": time_s})
            if step in settings.generate_at:
                sets[step] = generate(module)
            if "validation_loss" in record or step in settings.generate_at:
                context.save(checkpoint_arrays(module, optimizer, stopping, sets), step, history)
        if settings.patience is None:
            return module, {"step": step}
        module.load_state_dict(stopping.state)
        return module, {"step": step, "prompt_step": stopping.best_step}

    def held_out_loss(self, generators, module, held) -> float:
        """Nats per token of the validation functions given their prompts, summed over
        micro-batches in order (the same for any number of generators)."""
        ids, z = held
        with torch.no_grad():
            prompts = module(z, len(ids)).numpy()
        found = self.spread(generators, "log_likelihoods", prompts, ids)
        return -float(sum(ll.sum() for ll in found)) / sum(len(t) for t in ids)

    def spread(self, generators, method: str, prompts: np.ndarray, targets: list) -> list:
        """The generators' ``method`` on consecutive micro-batches of ``micro_batch`` prompts
        and targets, round robin; the results in order."""
        size = self.settings.micro_batch
        return ray.get([
            getattr(generators[i % len(generators)], method).remote(
                prompts[a : a + size], targets[a : a + size])
            for i, a in enumerate(range(0, len(targets), size))
        ])  # fmt: skip

    def prompts(self, tokenizer, module, pool, pool_features, batch: int, count: int) -> list:
        """Batch ``batch``'s ``count`` prompts (arrays: embeddings or token ids)."""
        rng = seeding.rng(self.seed, "generate", batch)
        if module is not None:
            rows = rng.choice(len(pool), count)
            z = None if pool_features is None else pool_features[rows]
            with torch.no_grad():
                return list(module(z, count).numpy())
        texts = self.method.texts(pool, count, rng)
        ids = tokenizer(texts, add_special_tokens=False).input_ids
        longest = max(len(row) for row in ids)
        if longest + self.settings.length > self.spec.context:
            raise ConfigError(
                f"algorithm: a hard prompt of {longest} tokens and {self.settings.length} new "
                f"tokens exceed the model's context {self.spec.context}"
            )
        return [np.asarray(row, dtype=np.int64) for row in ids]

    def generate(self, generators, tokenizer, module, pool, pool_features) -> list[str]:
        """``samples`` samples in fixed batches spread over the generators, as texts."""
        settings = self.settings
        size = settings.generation_batch
        counts = [min(size, settings.samples - a) for a in range(0, settings.samples, size)]
        refs = [
            generators[b % len(generators)].generate.remote(
                self.prompts(tokenizer, module, pool, pool_features, b, count),
                settings.length,
                seeding.torch_seed(self.seed, "generate", b),
            )
            for b, count in enumerate(counts)
        ]
        started, done = time.perf_counter(), 0
        pending = list(refs)
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            done += sum(counts[refs.index(ref)] for ref in finished)
            rate = done / (time.perf_counter() - started)
            print(f"[generate] {done}/{settings.samples} samples, {rate:.1f} samples/s", flush=True)
        samples = [row for batch in ray.get(refs) for row in batch]
        return tokenizer.batch_decode(samples, skip_special_tokens=True)

    def evaluate(self, texts, real, eval_texts, pool, cluster) -> dict[str, Any]:
        """MAUVE against the held-out sample, the downstream loss, and the set's shape."""
        settings = self.settings
        bpe = train_tokenizer(pool, settings.downstream.vocab_size).to_str()
        task = ray.remote(evaluation.downstream_loss).options(**cluster.worker.ray_options())
        downstream = task.remote(
            texts, eval_texts, bpe, self.learner, settings.downstream, self.seed
        )
        synthetic = features(settings.featurizer, texts, cluster, None)
        reference = features(settings.featurizer, real, cluster, self.feature_cache)
        known = set(pool)
        record: dict[str, Any] = {
            "mauve": evaluation.mauve_score(synthetic, reference, self.seed),
            **ray.get(downstream),
            "samples": len(texts),
            "empty_fraction": float(np.mean([not t.strip() for t in texts])),
            "distinct_fraction": len(set(texts)) / len(texts),
            "copied_fraction": float(np.mean([t in known for t in texts])),
        }
        return record


def jsonl(texts: list[str]) -> str:
    """One JSON object ``{"text": ...}`` a line."""
    return "".join(json.dumps({"text": t}) + "\n" for t in texts)


def prompt_line(steps: int, record: dict[str, Any]) -> str:
    """A prompt-training step's progress line."""
    head = f"[prompt step {record['step']:>{len(str(steps))}}/{steps}]"
    return progress_line(head, record, PROGRESS, tail=TIME)
