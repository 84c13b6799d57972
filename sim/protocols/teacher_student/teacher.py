"""The teacher actor: a trained model that serves, for windows of the training stream, its top-k
next-token distributions at a temperature (soft labels) and per-sequence scores.

It loads its weights from the teacher cache in its constructor, so when it dies Ray restarts it
from there (``max_restarts``) and retries the calls in flight (``max_task_retries``): the
student's run goes on with the same answers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from sim.interfaces.teacher_student import SoftLabels, StudentAlgorithm
from sim.protocols.teacher_student.data import window_tokens
from sim.runtime.workers import actor_device
from sim.training.distill import top_k_soft_labels

SCORE_CHUNK = 32  # windows per forward pass when scoring the whole stream


@ray.remote
class Teacher:
    def __init__(self, spec: Any, vocab_size: int, weights: str, stream: np.ndarray, context: int):
        self.device = actor_device(1)
        self.model = spec.build(vocab_size).to(self.device)
        self.model.load_state_dict(torch.load(Path(weights), map_location=self.device))
        self.model.eval()
        self.stream, self.context = stream, context
        self.busy_s = 0.0

    def _logits(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.from_numpy(window_tokens(self.stream, starts, self.context)).to(self.device)
        with torch.no_grad():
            return self.model(tokens[:, :-1]), tokens[:, 1:]

    def soft_labels(self, starts: np.ndarray, k: int, temperature: float) -> SoftLabels:
        """Top-``k`` soft labels for the windows at ``starts`` (numpy, on the CPU)."""
        tick = time.perf_counter()
        logits, _ = self._logits(starts)
        soft = top_k_soft_labels(logits, k, temperature)
        self.busy_s += time.perf_counter() - tick
        return SoftLabels(soft.indices.cpu().numpy(), soft.probabilities.cpu().numpy())

    def scores(self, starts: np.ndarray, algorithm: StudentAlgorithm) -> np.ndarray:
        """The algorithm's ``sequence_scores`` of each window."""
        parts = []
        for chunk in np.array_split(starts, max(1, -(-len(starts) // SCORE_CHUNK))):
            logits, targets = self._logits(chunk)
            parts.append(np.asarray(algorithm.sequence_scores(logits, targets)))
        return np.concatenate(parts) if parts else np.zeros(0)

    def busy_seconds(self) -> float:
        return self.busy_s
