"""Token windows and the batches of each step: pure functions of the stream, the seed and the
step, so any number of workers, and a resumed run, see the same data."""

from __future__ import annotations

import numpy as np

from sim import seeding


def window_starts(stream_length: int, context: int) -> np.ndarray:
    """Starts of the non-overlapping windows of ``context + 1`` tokens (inputs and their next
    tokens) that fit in a stream: ``0, context, 2 context, ...``."""
    return np.arange(0, stream_length - context, context, dtype=np.int64)


def window_tokens(stream: np.ndarray, starts: np.ndarray, context: int) -> np.ndarray:
    """``(len(starts), context + 1)`` int64 token ids."""
    rows = [stream[s : s + context + 1] for s in starts]
    return np.stack(rows).astype(np.int64) if rows else np.zeros((0, context + 1), np.int64)


def step_windows(seed: int, step: int, candidates: np.ndarray, batch_size: int) -> np.ndarray:
    """The global batch of ``step``: ``batch_size`` distinct windows drawn from ``candidates``
    on the stream ``(seed, "batch", step)``."""
    rng = seeding.rng(seed, "batch", step)
    return candidates[rng.choice(len(candidates), batch_size, replace=False)]


def shard(rows: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Worker ``rank``'s consecutive share of ``rows`` (``len(rows)`` divisible by ``world``)."""
    size = len(rows) // world
    return rows[rank * size : (rank + 1) * size]
