"""Target domains for synthetic data: short texts of one kind, split by source document.

- ``python_functions``: every function and method of the standard library (outside its tests),
  as written (``ast`` source segments, dedented): an MBPP-like domain of Python code.
- ``python_docs``: the paragraphs of the Python 3.11 documentation's reST sources (Debian
  ``python3.11-doc``; ``bash scripts/get_text_data.sh``) of at least ``min_chars`` characters.

Splits are by source document (module or page) with :func:`envs.text.split_documents`, so no
held-out example shares a file with a training one. The examples are cached under
``$COHORT_DATA_DIR/targets`` (parsing the standard library takes ~13 s here).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

from envs.text import Document, python_docs_documents, python_stdlib_documents
from envs.text import split_documents as split_names
from sim import checks
from sim.data_dirs import cache_root

DOMAINS = ("python_functions", "python_docs")


@dataclass(frozen=True)
class TargetExamples:
    """The domain's examples: ``train`` (what prompts learn from) and ``held_out`` (what
    synthetic data is judged against), each a list of texts in a fixed order."""

    train: list[str]
    held_out: list[str]


def functions(source: str) -> list[str]:
    """The source of every function and method in ``source`` (dedented), in file order; a file
    that does not parse gives none."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    nodes = (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    found = []
    for node in sorted(nodes, key=lambda n: (n.lineno, n.col_offset)):
        segment = ast.get_source_segment(source, node, padded=True)
        if segment:
            found.append(textwrap.dedent(segment))
    return found


def paragraphs(source: str, min_chars: int) -> list[str]:
    """The blank-line-separated paragraphs of ``source`` with at least ``min_chars`` characters."""
    parts = (p.strip() for p in source.replace("\r\n", "\n").split("\n\n"))
    return [p for p in parts if len(p) >= min_chars]


@dataclass
class TargetText:
    """A target domain (``domain``: one of :data:`DOMAINS`) split by document: the first
    ``held_out_fraction`` of the documents ranked by ``sha256(split_seed/name)`` are held out.
    Examples shorter than ``min_chars`` characters are dropped."""

    domain: str = "python_functions"
    min_chars: int = 120
    held_out_fraction: float = 0.2
    split_seed: int = 0
    data_dir: str | None = None
    cache_dir: str | None = None  # None: $COHORT_DATA_DIR/targets or ~/.local/share/cohort

    def __post_init__(self) -> None:
        checks.one_of(self, "domain", DOMAINS)
        checks.at_least(self, 1, "min_chars")
        checks.in_interval(self, 0, 1, "held_out_fraction")

    def documents(self) -> list[Document]:
        if self.domain == "python_functions":
            return python_stdlib_documents()
        return python_docs_documents(self.data_dir)

    def cache_folder(self) -> Path:
        """``<cache_dir or $COHORT_DATA_DIR or ~/.local/share/cohort>/targets``."""
        return cache_root(self.cache_dir) / "targets"

    def locate(self) -> None:
        """Raise FileNotFoundError, saying how to get it, if the domain's sources are missing."""
        self.documents()

    def extract(self, text: str) -> list[str]:
        if self.domain == "python_functions":
            return [f for f in functions(text) if len(f) >= self.min_chars]
        return paragraphs(text, self.min_chars)

    def examples(self) -> TargetExamples:
        """The split examples (built and cached on first use)."""
        documents = self.documents()
        described = [
            self.domain,
            self.min_chars,
            [(d.name, d.path.stat().st_size) for d in documents],
        ]
        key = hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]
        cache = self.cache_folder() / f"{self.domain}-{key}.json"
        if cache.is_file():
            by_document = json.loads(cache.read_text())
        else:
            by_document = {
                d.name: self.extract(d.path.read_text("utf-8", errors="replace")) for d in documents
            }
            cache.parent.mkdir(parents=True, exist_ok=True)
            staging = cache.with_name(f".{cache.name}.{os.getpid()}")
            staging.write_text(json.dumps(by_document))
            staging.replace(cache)  # atomic: a concurrent or killed build leaves no half file
        names = [name for name, found in by_document.items() if found]
        splits = split_names(names, self.split_seed, 0.0, self.held_out_fraction)
        return TargetExamples(
            train=[e for name in splits["train"] for e in by_document[name]],
            held_out=[e for name in splits["test"] for e in by_document[name]],
        )
