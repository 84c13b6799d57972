"""Atomic, code-free checkpoints: one ``.npz`` of arrays plus a JSON header, loaded with
``allow_pickle=False`` so a checkpoint received from elsewhere cannot run code.

Beside the header, a manifest records every array's shape, dtype and SHA-256; :func:`load`
checks the file against it, so a truncated, edited or mixed-up checkpoint is refused with the
array named instead of being resumed from.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = "checkpoint.npz"
_META = "__meta__"
_MANIFEST = "__manifest__"


class CheckpointError(ValueError):
    """The file is not a readable, intact checkpoint (the message says why)."""


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


def _describe(array: np.ndarray) -> list[Any]:
    """``[shape, dtype, sha256]`` of an array (the manifest's entry)."""
    data = np.ascontiguousarray(array)
    return [list(array.shape), array.dtype.str, hashlib.sha256(data.tobytes()).hexdigest()]


def _json_array(value: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)


def save(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``arrays``, their manifest and the JSON-serialisable ``meta`` to ``path``
    atomically."""
    for reserved in (_META, _MANIFEST):
        if reserved in arrays:
            raise ValueError(f"array name {reserved!r} is reserved")
    manifest = {name: _describe(np.asarray(array)) for name, array in arrays.items()}
    extra = {_META: _json_array(meta), _MANIFEST: _json_array(manifest)}
    atomic_write(path, lambda handle: np.savez(handle, **arrays, **extra))


def _read_json(archive: Any, name: str) -> Any:
    if name not in archive.files:
        raise CheckpointError(f"it has no {name} entry (not a Cohort checkpoint)")
    raw = archive[name]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"its {name} entry is not a JSON text (dtype {raw.dtype})")
    try:
        return json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"its {name} entry is not valid JSON ({error})") from None


def load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save` (never unpickles); raises
    :class:`CheckpointError` if it cannot be read, holds object arrays, or does not match its
    manifest (checkpoints written before the manifest existed are read without one)."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError("it is not an .npz archive (truncated or overwritten?)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = _read_json(archive, _META)
            manifest = _read_json(archive, _MANIFEST) if _MANIFEST in archive.files else None
            arrays = {n: archive[n] for n in archive.files if n not in (_META, _MANIFEST)}
    except CheckpointError:
        raise
    except ValueError as error:  # object arrays (refused without unpickling), bad headers
        raise CheckpointError(str(error).split("\n")[0]) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise CheckpointError(f"unreadable ({type(error).__name__}: {error})") from None
    if manifest is not None:
        if not isinstance(manifest, dict) or set(manifest) != set(arrays):
            raise CheckpointError(
                f"its arrays {sorted(arrays)} are not those of its manifest "
                f"{sorted(manifest) if isinstance(manifest, dict) else manifest!r}"
            )
        for name, array in arrays.items():
            shape, dtype, digest = _describe(array)
            want = manifest[name]
            if not (isinstance(want, list) and len(want) == 3 and isinstance(want[0], list)):
                raise CheckpointError(f"its manifest's entry for {name!r} is malformed: {want!r}")
            if [shape, dtype] != want[:2]:
                raise CheckpointError(
                    f"array {name!r} has shape {tuple(shape)} and dtype {dtype}; its manifest "
                    f"says {tuple(want[0])} and {want[1]}"
                )
            if digest != want[2]:
                raise CheckpointError(f"array {name!r} does not match its manifest's SHA-256")
    return arrays, meta
