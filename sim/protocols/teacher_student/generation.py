"""Generated sequences as Ray tasks: corpus prompts continued by a model (the teacher, from its
cached weights, or the student, from a snapshot of its parameters), in chunks of a fixed number
of rows, each chunk sampled on its own seed path, so the rows do not depend on how many tasks
run at once or where. Also the held-out measures of the finished student, chunk by chunk."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
import torch

from sim import seeding
from sim.protocols.teacher_student.teacher import load_model
from sim.runtime.workers import actor_device
from sim.training.sampling import sample_continuations

CHUNK = 64  # prompts per generation task (a few tasks per refresh, each loading the model once)
MEASURE_CHUNK = 8  # prompts per final-measure task (16 prompts: 2 tasks, one per core here)


def prompts(stream: np.ndarray, count: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, length)`` int64 prompts: token runs of ``stream`` at random positions."""
    starts = rng.choice(len(stream) - length, count, replace=False)
    return np.stack([stream[s : s + length] for s in np.sort(starts)]).astype(np.int64)


@ray.remote
def _generate(spec: Any, vocab_size: int, weights: Any, rows: np.ndarray, length: int,
              temperature: float, seed: int) -> np.ndarray:  # fmt: skip
    model = load_model(spec, vocab_size, weights, actor_device(1))
    tokens = torch.tensor(rows, device=next(model.parameters()).device)
    return sample_continuations(model, tokens, length, temperature, seed).cpu().numpy()


def generate(
    model: tuple[Any, int, Any],
    rows: np.ndarray,
    length: int,
    temperature: float,
    seed_path: tuple[int | str, ...],
    options: dict[str, Any],
) -> list[ray.ObjectRef]:
    """Refs to the chunks of ``rows`` (prompts) continued by ``length`` tokens from ``model``
    (``(spec, vocab_size, weights)``: a weights file, or a ref to named arrays) at
    ``temperature`` (0: greedy); chunk ``i`` samples on ``seeding.torch_seed(*seed_path, i)``."""
    spec, vocab_size, weights = model
    return [
        _generate.options(**options).remote(
            spec,
            vocab_size,
            weights,
            chunk,
            length,
            temperature,
            seeding.torch_seed(*seed_path, i),
        )  # fmt: skip
        for i, chunk in enumerate(np.array_split(rows, max(1, -(-len(rows) // CHUNK))))
    ]


@ray.remote
def _measure(algorithm: Any, vocab_size: int, teacher_spec: Any, teacher_weights: Any,
             student_spec: Any, student_weights: Any, rows: np.ndarray, new_tokens: int,
             seed: int) -> tuple[int, dict[str, float]]:  # fmt: skip
    device = actor_device(1)
    teacher = load_model(teacher_spec, vocab_size, teacher_weights, device)
    student = load_model(student_spec, vocab_size, student_weights, device)
    return len(rows), algorithm.final_measures(teacher, student, rows, new_tokens, seed)


def final_measures(
    algorithm: Any,
    vocab_size: int,
    teacher: tuple[Any, Any],
    student: tuple[Any, dict[str, np.ndarray]],
    rows: np.ndarray,
    new_tokens: int,
    seed: int,
    options: dict[str, Any],
) -> dict[str, float]:
    """The algorithm's ``final_measures`` over chunks of the held-out prompts ``rows`` (each
    continued by ``new_tokens``) as Ray tasks, averaged over the chunks weighted by their
    prompts. ``teacher`` and ``student``: ``(spec, weights)`` over one vocabulary."""
    student_spec, arrays = student
    student_ref = ray.put({k: v for k, v in arrays.items() if k.startswith("model/")})
    chunks = np.array_split(rows, max(1, -(-len(rows) // MEASURE_CHUNK)))
    parts = ray.get([
        _measure.options(**options).remote(
            algorithm, vocab_size, *teacher, student_spec, student_ref,
            chunk, new_tokens, seeding.torch_seed(seed, "measure", i),
        )
        for i, chunk in enumerate(chunks)
    ])  # fmt: skip
    total = sum(n for n, _ in parts)
    return {key: sum(n * values[key] for n, values in parts) / total for key in parts[0][1]}
