"""Atomic, code-free checkpoints: one ``.npz`` of arrays plus a JSON header, loaded with
``allow_pickle=False`` so a checkpoint received from elsewhere cannot run code."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = "checkpoint.npz"
_META = "__meta__"


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def save(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``arrays`` and the JSON-serialisable ``meta`` to ``path`` atomically."""
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    header = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda handle: np.savez(handle, **arrays, **{_META: header}))


def load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save` (never unpickles)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files if name != _META}
        meta = json.loads(archive[_META].tobytes().decode())
    return arrays, meta
