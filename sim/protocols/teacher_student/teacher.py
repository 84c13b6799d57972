"""The teacher actor: a trained model that serves, for token sequences, its next-token
distributions at a temperature (the top-k or the whole of them: soft labels), and per-sequence
scores of the training windows.

It loads its weights from the teacher cache in its constructor, so when it dies Ray restarts it
from there (``max_restarts``) and retries the calls in flight (``max_task_retries``): the
student's run goes on with the same answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import ray
import safetensors.torch
import torch

from sim.interfaces.teacher_student import SoftLabels, StudentAlgorithm
from sim.protocols.teacher_student.data import window_tokens
from sim.runtime.workers import actor_device
from sim.training.distill import top_k_soft_labels

SCORE_CHUNK = 32  # windows per forward pass when scoring the whole stream


def load_model(spec: Any, vocab_size: int, weights: Any, device: torch.device) -> torch.nn.Module:
    """``spec.build(vocab_size)`` in eval mode with ``weights``: a safetensors file's path, or
    named arrays (``model/<name>``, as a checkpoint)."""
    model = spec.build(vocab_size).to(device)
    if isinstance(weights, str | Path):
        state = safetensors.torch.load_file(str(weights), device=str(device))
    else:
        state = {k.removeprefix("model/"): torch.tensor(v) for k, v in weights.items()
                 if k.startswith("model/")}  # fmt: skip
    model.load_state_dict(state)
    return model.eval()


@ray.remote
class Teacher:
    def __init__(self, spec: Any, vocab_size: int, weights: str, context: int):
        # Small arguments only: Ray restarts an actor from its constructor's arguments, and
        # warns about any it holds in the object store (ray-project/ray#53727).
        self.device = actor_device(1)
        self.model = load_model(spec, vocab_size, weights, self.device)
        self.context = context

    def soft_labels(self, tokens: np.ndarray, k: int | None, temperature: float) -> SoftLabels:
        """The next-token distributions after every position of ``tokens`` (n, length) at
        ``temperature``: the top ``k``, renormalised, or (``k`` None) the whole of them."""
        with torch.no_grad():
            logits = self.model(torch.from_numpy(tokens).to(self.device))
        if k is None:
            return SoftLabels(None, torch.softmax(logits.float() / temperature, -1).cpu().numpy())
        top = top_k_soft_labels(logits, k, temperature)
        return SoftLabels(top.indices.cpu().numpy(), top.probabilities.cpu().numpy())

    def scores(
        self, stream: np.ndarray, starts: np.ndarray, algorithm: StudentAlgorithm
    ) -> np.ndarray:
        """The algorithm's ``sequence_scores`` of each training window of ``stream``."""
        parts = []
        for chunk in np.array_split(starts, max(1, -(-len(starts) // SCORE_CHUNK))):
            tokens = torch.from_numpy(window_tokens(stream, chunk, self.context))
            with torch.no_grad():
                logits = self.model(tokens[:, :-1].to(self.device))
            parts.append(np.asarray(algorithm.sequence_scores(logits, tokens[:, 1:])))
        return np.concatenate(parts) if parts else np.zeros(0)
