"""The draft-distillation protocol (``protocol=draft_distillation``): DistillSpec with a real
pretrained target (Zhou et al., ICLR 2024, arXiv 2310.08461).

The target is a frozen pretrained LM (``model``, e.g. ``model=smollm2``); the draft is a small
GPT over the target's vocabulary (``learner``, ``learner=draft_gpt``: tied input and output
embeddings); the domain is ``env=target_text`` (prompts: the first ``algorithm.prompt_length``
tokens of its examples). One Ray task (``cluster.worker`` resources; its torch threads are its
CPUs, its device the GPU Ray assigns it) runs :mod:`sim.training.draft`'s recipe:

1. the draft is trained on the domain's text with the next-token loss for ``pretrain_steps``
   (cached by its shape, settings, seed, device type and token stream under
   ``<COHORT_DATA_DIR>/models/drafts``, so the arms of a sweep with one seed share it: they
   start from the same undistilled draft, trained once);
2. it is distilled toward the target for ``steps`` steps with ``algorithm.divergence`` on
   ``algorithm.data`` (``fixed``, ``target``, ``draft``: on-policy every ``algorithm.refresh``
   steps; ``divergence=none``: no distillation, the undistilled draft), the loss on the
   continuations' ``new_tokens`` tokens only;
3. every ``eval_every`` steps: the exact acceptance rate along the target's continuations of
   ``held_out.prompts`` held-out prompts (sampled at temperature 1, and greedy);
4. at the end the algorithm's final measures (speculative decoding at its gammas, temperatures
   and leniences: block efficiency, measured and predicted speed-up, on this task's device).

The run is one task: it checkpoints once, at its end (a killed run starts again); while it runs,
its progress is the recipe's lines (a fifth of the steps each), and its records are written
when it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import ray
import torch

from sim import checks, seeding
from sim.errors import CohortError, ConfigError
from sim.interfaces.protocol import Outcome, RunContext, Setup
from sim.interfaces.synthesis import FrozenLMSpec, TargetDomain
from sim.interfaces.teacher_student import LanguageModelSpec
from sim.protocols.teacher_student.protocol import HeldOut
from sim.runtime.config import ClusterConfig
from sim.runtime.progress import progress_line
from sim.runtime.reservation import Reservation
from sim.runtime.workers import actor_device, follow, logged
from sim.training import draft as recipe
from sim.training.draft import DraftTraining, token_examples
from sim.training.sampling import sample_continuations
from sim.training.speculative import CausalLM, exact_acceptance

PROGRESS = (
    ("distill_loss", "loss {:.4f}"),
    ("alpha", "alpha {:.3f}"),
    ("alpha_greedy", "greedy {:.3f}"),
    ("generate_s", "generating {:.0f}s"),
)


@dataclass
class DraftDistillation(DraftTraining):
    """The draft's schedule (:class:`~sim.training.draft.DraftTraining`'s fields), the
    acceptance rate every ``eval_every`` distillation steps and the final measures on
    ``held_out``. The draft trains on ``train_examples`` of the domain's examples (a sample
    drawn with the seed; None: all)."""

    resumable: ClassVar[tuple[str, ...]] = ()
    roles: ClassVar[tuple[str, ...]] = ("worker",)

    eval_every: int = 20
    train_examples: int | None = None
    held_out: HeldOut = field(default_factory=lambda: HeldOut(8, 32, 64))
    cache_dir: str | None = None  # pretrained drafts; None: $COHORT_DATA_DIR or ~/.local/share

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.at_least(self, 1, "eval_every")
        checks.at_least(self, 1, "train_examples", optional=True)
        if self.held_out.prompts < 1:
            raise ValueError(f"held_out.prompts: must be >= 1 (got {self.held_out.prompts})")

    def reservation(self, cluster: ClusterConfig, workers: int) -> Reservation:
        """One task (``cluster.worker`` resources) holds the target and the draft."""
        return Reservation({"worker": 1})

    def prepare(self, setup: Setup) -> DraftJob:
        name = "draft_distillation"
        domain = setup.component("env", TargetDomain, "a target domain (env=target_text)", name)
        target = setup.component(
            "model", FrozenLMSpec, "a frozen pretrained LM (model=smollm2)", name
        )
        draft = setup.component(
            "learner", LanguageModelSpec, "a draft GPT (learner=draft_gpt)", name
        )
        algorithm = setup.components.get("algorithm")
        if not hasattr(algorithm, "final_measures") or not hasattr(algorithm, "divergence"):
            raise ConfigError(
                f"algorithm: protocol={name} needs DistillSpec (algorithm=draft_distillspec; "
                f"got {type(algorithm).__name__})"
            )
        if algorithm.data not in recipe.SOURCES:
            raise ConfigError(
                f"algorithm.data: protocol={name} takes one of {recipe.SOURCES} (got "
                f"{algorithm.data!r})"
            )
        for what, length in (
            ("algorithm.prompt_length + protocol.new_tokens",
             algorithm.prompt_length + self.new_tokens),
            ("protocol.held_out.prompt_length + new_tokens",
             self.held_out.prompt_length + self.held_out.new_tokens),
            ("protocol.context", self.context),
        ):  # fmt: skip
            if length > draft.context:
                raise ConfigError(
                    f"{what}: {length} tokens exceed the draft's context {draft.context} "
                    "(learner.context)"
                )
        if setup.start is not None:  # it checkpoints only at its end
            raise CohortError("resume: the run is already finished (its one checkpoint is its end)")
        try:
            target.locate()
            domain.locate()
        except FileNotFoundError as error:
            raise CohortError(f"model/env: {error}") from None
        return DraftJob(self, domain, target, draft, algorithm, setup.seed)


@dataclass
class DraftJob:
    settings: DraftDistillation
    domain: Any
    target: Any
    draft: Any
    algorithm: Any
    seed: int

    @property
    def distill_steps(self) -> int:
        """Distillation steps: none for the undistilled draft (``divergence=none``)."""
        return 0 if self.algorithm.divergence == "none" else self.settings.steps

    def run(self, context: RunContext) -> Outcome:
        context.begin([])
        options = context.cluster.worker.ray_options()
        task = _run.options(**options).remote(self, seeding.torch_seed(self.seed, "measure"))
        history, weights = follow(task, show=context.progress)  # lines printed as they come
        steps = self.distill_steps
        for record in history:
            context.record(record, step_line(steps, record))
        context.save({f"model/{k}": v for k, v in weights.items()}, steps, history)
        params = np.concatenate([v.ravel() for _, v in sorted(weights.items())])
        curves = ("alpha", "alpha_greedy", "distill_loss")
        return Outcome(params, history, curves, x="step", steps=f"{steps} steps", weights=weights)


def step_line(steps: int, record: dict[str, Any]) -> str:
    head = f"[step {record['step']:>{len(str(steps))}}/{steps}]"
    return progress_line(head, record, PROGRESS, tail=("time_s", "{:.0f}s"))


@ray.remote(num_returns="streaming")
def _run(job: DraftJob, measure_seed: int) -> Iterator[Any]:
    """The whole run inside one task (see the module docstring); its progress lines stream to
    the caller, then its history and the draft's weights."""
    device = actor_device(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    yield from logged(lambda log: _work(job, measure_seed, device, log))


def _work(
    job: DraftJob, measure_seed: int, device: torch.device, log: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    model, tokenizer = job.target.load()
    target = CausalLM(model.to(device))
    settings, method, held = job.settings, job.algorithm, job.settings.held_out
    examples = job.domain.examples()
    texts = examples.train
    if settings.train_examples is not None and settings.train_examples < len(texts):
        rng = seeding.rng(job.seed, "train_examples")
        picks = np.sort(rng.choice(len(texts), settings.train_examples, replace=False))
        texts = [texts[i] for i in picks]
    train = token_examples(tokenizer, texts, method.prompt_length + settings.new_tokens)
    held_out = token_examples(tokenizer, examples.held_out, held.prompt_length + held.new_tokens)
    stream = recipe.domain_stream(train, tokenizer.eos_token_id)
    if len(train) < settings.batch_size or len(held_out) < held.prompts:
        raise ConfigError(
            f"env: {len(train)} train and {len(held_out)} held-out examples are long enough; "
            f"protocol.batch_size {settings.batch_size} and held_out.prompts {held.prompts} "
            "need more"
        )
    if len(stream) <= settings.context:
        raise ConfigError(
            f"protocol.context: the train examples' {len(stream)} tokens hold no window of "
            f"{settings.context + 1}"
        )
    draft = recipe.pretrained_draft(job.draft, target.vocab_size, stream, settings, job.seed,
                                    device, settings.cache_dir, log=log)  # fmt: skip
    prompts = recipe.evenly_spaced(held_out, held.prompts, held.prompt_length)
    references = {
        name: sample_continuations(target, torch.from_numpy(prompts).to(device), held.new_tokens,
                                   temperature, seeding.torch_seed(job.seed, "held_out", name))
        for name, temperature in (("sampled", 1.0), ("greedy", 0.0))
    }  # fmt: skip
    history: list[dict[str, Any]] = []
    start = time.perf_counter()

    def evaluate(step_done: int, loss: float | None, seconds: dict[str, float]) -> None:
        record: dict[str, Any] = {"step": step_done, "time_s": time.perf_counter() - start}
        if loss is not None:
            record["distill_loss"] = loss
        record |= agreement(target, draft, references, held.prompt_length) | seconds
        history.append(record)  # the driver records and shows them when the task returns

    evaluate(0, None, {})
    if job.distill_steps:
        recipe.distill(draft, target, train, settings, method, job.seed, log=log,
                       every=settings.eval_every, evaluate=evaluate)  # fmt: skip
    log(
        f"[measure] speculative decoding of {held.prompts} held-out prompts, gammas "
        f"{list(method.gammas)}, temperatures {list(method.decode_temperatures)}"
    )
    tick = time.perf_counter()
    history[-1] |= method.final_measures(target, draft, prompts, held.new_tokens, measure_seed)
    history[-1]["measure_s"] = time.perf_counter() - tick
    weights = {k: v.detach().cpu().numpy() for k, v in draft.state_dict().items()}
    return history, weights


def agreement(
    target: Any, draft: Any, references: dict[str, torch.Tensor], prompt: int
) -> dict[str, float]:
    """``alpha``: the mean ``1 - TVD`` of both softmaxes along the target's sampled
    continuations; ``alpha_greedy``: how often the argmaxes agree along its greedy ones."""
    found = {}
    for key, name, temperature in (("alpha", "sampled", 1.0), ("alpha_greedy", "greedy", 0.0)):
        values = [
            exact_acceptance(target, draft, list(map(int, row)), prompt, temperature)
            for row in references[name]
        ]
        found[key] = float(np.mean(values))
    return found
