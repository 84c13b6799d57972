"""What a covering run measures (Jiang & Rostamizadeh, ICML 2021, Sec. 2): the queries until
every positive was found, the excess over the optimal learner, and the coverage curve's area.
``found`` is the answer to each query, in query order (True: a positive)."""

from __future__ import annotations

import numpy as np


def queries_to_cover(found: np.ndarray, positives: int) -> int | None:
    """The 1-based query at which the ``positives``-th positive was found (None: never)."""
    counts = np.cumsum(found)
    hit = np.flatnonzero(counts >= positives)
    return int(hit[0]) + 1 if positives and len(hit) else (0 if positives == 0 else None)


def excess_query_cost(found: np.ndarray, positives: int) -> int | None:
    """Queries until every positive was found minus the number of positives (the paper's excess
    query cost over the optimal learner, which asks only positives); None if not covered."""
    cost = queries_to_cover(found, positives)
    return None if cost is None else cost - positives


def coverage_auc(found: np.ndarray, positives: int, pool_size: int) -> float:
    """Area under the coverage curve (positives found after ``q`` queries, ``q = 1..pool_size``,
    held at its last value after the run), over the area under the perfect curve ``min(q, P)``:
    1 for a learner that asks the positives first; about ``1/2`` for uniform order."""
    if positives == 0:
        return 1.0
    curve = np.cumsum(np.asarray(found, np.int64))[:pool_size]
    held = curve[-1] if len(curve) else 0
    area = curve.sum() + held * (pool_size - len(curve))
    perfect = np.minimum(np.arange(1, pool_size + 1), positives).sum()
    return float(area / perfect)
