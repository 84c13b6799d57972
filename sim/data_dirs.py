"""Where the data loaders look: the configured ``data_dir`` alone when one is given, else
``$COHORT_DATA_DIR`` (or folders below it), then the system's places; and the one-line error
that lists them."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

DATA_DIR_VARIABLE = "COHORT_DATA_DIR"
USER_DATA_DIR = Path.home() / ".local" / "share" / "cohort"


def cache_root(cache_dir: str | None) -> Path:
    """Where what is built from the data is cached: ``cache_dir`` if given, else
    ``$COHORT_DATA_DIR``, else ``~/.local/share/cohort``."""
    return Path(cache_dir or os.environ.get(DATA_DIR_VARIABLE) or USER_DATA_DIR)


def candidate_dirs(
    data_dir: str | None, below_variable: Sequence[str], defaults: Sequence[Path]
) -> list[Path]:
    """``[data_dir]`` if given (an explicit folder is never silently replaced by another copy),
    else ``$COHORT_DATA_DIR/<sub>`` for each of ``below_variable`` (``""``: the folder itself),
    then ``defaults``."""
    if data_dir:
        return [Path(data_dir)]
    variable = os.environ.get(DATA_DIR_VARIABLE)
    from_variable = [Path(variable) / sub for sub in below_variable] if variable else []
    return [*from_variable, *defaults]


def first_holding(
    folders: Sequence[Path], holds: Callable[[Path], bool], missing: str, hint: str
) -> Path:
    """The first of ``folders`` that ``holds`` the data; else FileNotFoundError naming them all."""
    for folder in folders:
        if holds(folder):
            return folder
    looked = ", ".join(str(folder) for folder in folders)
    raise FileNotFoundError(f"{missing}; looked in: {looked}. {hint}")


def publish(staging: Path, folder: Path, marker: str) -> None:
    """Rename the fully written ``staging`` folder to ``folder`` (atomic, so a concurrent or
    killed build never leaves half a cache); if another process published it first, drop
    ``staging`` (an error if ``folder`` lacks ``marker``, the file a complete copy has)."""
    try:
        staging.rename(folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / marker).is_file():
            raise


def discard_damaged(path: Path, error: BaseException) -> None:
    """A cache file or folder that cannot be read: say so in one line and remove it (moved
    aside first, so a concurrent reader never sees half of it), for the caller to rebuild."""
    print(
        f"cohort: warning: the cache {path} is damaged ({type(error).__name__}: "
        f"{str(error).strip().splitlines()[0][:160] if str(error).strip() else '-'}); "
        "building it again",
        file=sys.stderr,
        flush=True,
    )
    aside = path.with_name(f".{path.name}.damaged.{os.getpid()}")
    try:
        path.rename(aside)
    except OSError:
        return  # another process moved or rebuilt it first
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
