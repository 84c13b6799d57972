"""Where the data loaders look, in order: the configured ``data_dir``, ``$COHORT_DATA_DIR`` (or
folders below it), then the system's places; and the one-line error that lists them."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

DATA_DIR_VARIABLE = "COHORT_DATA_DIR"


def candidate_dirs(
    data_dir: str | None, below_variable: Sequence[str], defaults: Sequence[Path]
) -> list[Path]:
    """``data_dir``, then ``$COHORT_DATA_DIR/<sub>`` for each of ``below_variable`` (``""``: the
    folder itself), then ``defaults``."""
    variable = os.environ.get(DATA_DIR_VARIABLE)
    given = [Path(data_dir)] if data_dir else []
    from_variable = [Path(variable) / sub for sub in below_variable] if variable else []
    return [*given, *from_variable, *defaults]


def first_holding(
    folders: Sequence[Path], holds: Callable[[Path], bool], missing: str, hint: str
) -> Path:
    """The first of ``folders`` that ``holds`` the data; else FileNotFoundError naming them all."""
    for folder in folders:
        if holds(folder):
            return folder
    looked = ", ".join(str(folder) for folder in folders)
    raise FileNotFoundError(f"{missing}; looked in: {looked}. {hint}")
