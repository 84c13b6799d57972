"""One console line per round: ``[round 5/60]  train_loss 0.8314  test_acc 0.7732  0.24s``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Field = tuple[str, str]  # (metric, format of its text), e.g. ("test_accuracy", "test_acc {:.4f}")


def progress_line(
    head: str,
    record: Mapping[str, Any],
    fields: Sequence[Field],
    counters: Sequence[Field] = (),
    tail: Field = ("round_time_s", "{:.2f}s"),
) -> str:
    """``head``, the ``fields`` the record has, the ``counters`` that are not 0 (dropped clients,
    restarts), then ``tail`` (the round's time)."""
    parts = [head]
    parts += [text.format(record[key]) for key, text in fields if key in record]
    parts += [text.format(record[key]) for key, text in counters if record.get(key)]
    parts += [tail[1].format(record[tail[0]])]
    return "  ".join(parts)
