"""Churn between a base and a new model on a test set (Jiang et al., "Churn reduction via
distillation", ICLR 2022, Sec. 2; Milani Fard et al. 2016): how often their predictions differ,
split by which of them is right."""

from __future__ import annotations

import numpy as np


def churn_metrics(base: np.ndarray, new: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """``churn`` = P[new != base]; ``good_churn`` = P[base wrong, new right]; ``bad_churn`` =
    P[base right, new wrong]; ``win_loss`` = good / bad (None when there is no bad churn).
    ``base``, ``new``: predicted classes; ``labels``: the truth."""
    if len(labels) == 0:
        raise ValueError("churn of an empty test set")
    base_right, new_right = base == labels, new == labels
    good = float(np.mean(~base_right & new_right))
    bad = float(np.mean(base_right & ~new_right))
    return {
        "churn": float(np.mean(base != new)),
        "good_churn": good,
        "bad_churn": bad,
        "win_loss": good / bad if bad else None,
    }
