"""Every random stream of a run derives from its seed by a fixed path.

``rng(seed, "client", round, client_id)`` is the generator of one client's local training in one
round, whatever worker runs it and whenever. Roles are strings hashed to fixed integers (CRC-32),
so adding a role never shifts another role's stream.
"""

from __future__ import annotations

import zlib

import numpy as np


def _word(part: int | str) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode())
    if part < 0:
        raise ValueError(f"seed path parts must be non-negative, got {part}")
    return int(part)


def seed_sequence(seed: int, *path: int | str) -> np.random.SeedSequence:
    """The SeedSequence at ``path`` below ``seed``."""
    return np.random.SeedSequence([_word(seed), *(_word(p) for p in path)])


def rng(seed: int, *path: int | str) -> np.random.Generator:
    """A numpy Generator for the stream at ``path`` below ``seed``."""
    return np.random.default_rng(seed_sequence(seed, *path))


def torch_seed(seed: int, *path: int | str) -> int:
    """A 63-bit integer seed for torch generators on the stream at ``path``."""
    return int(seed_sequence(seed, *path).generate_state(1, np.uint64)[0] >> 1)


def sample_cohort(seed: int, round_index: int, population: int, size: int) -> np.ndarray:
    """The clients of one round: ``size`` distinct ids, sorted, a pure function of (seed, round)."""
    if not 1 <= size <= population:
        raise ValueError(f"cohort size must be in [1, {population}], got {size}")
    chosen = rng(seed, "cohort", round_index).choice(population, size=size, replace=False)
    return np.sort(chosen)
