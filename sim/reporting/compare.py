"""Paired win/tie/loss comparison of one method against the others, as in Bahri et al., "Is
margin all you need?" (arXiv 2210.03822): per dataset, the area under each run's
metric-vs-labels curve is paired across methods by every other setting (seed, batch size, ...),
and a two-sided Wilcoxon signed-rank test at level ``alpha`` calls a win, a tie or a loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata, wilcoxon

from sim.reporting.plotting import series


def area_under_curve(
    history: Sequence[Mapping], metric: str, x: str, upto: float | None = None
) -> float | None:
    """The curve's mean height: trapezoid area of ``metric`` vs ``x`` over the x range, or over
    its points of ``x <= upto`` (a budget: the curve to its last point within it, which is
    ``upto`` itself when the batches end there); a single point gives its value; no point
    gives None."""
    xs, ys = series(history, metric, x)
    if upto is not None:
        xs, ys = xs[xs <= upto], ys[xs <= upto]
    if len(xs) == 0:
        return None
    if len(xs) == 1 or xs[-1] == xs[0]:
        return float(ys.mean())
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2) / (xs[-1] - xs[0]))


def signed_rank_sums(diffs: np.ndarray) -> tuple[float, float]:
    """Wilcoxon's ``(W+, W-)``: the sums of the ranks of ``|d|`` over the positive and the
    negative differences (zeros dropped, ties given their average rank), as in
    ``scipy.stats.wilcoxon``'s default ``zero_method="wilcox"``."""
    nonzero = diffs[diffs != 0]
    ranks = rankdata(np.abs(nonzero))
    return float(ranks[nonzero > 0].sum()), float(ranks[nonzero < 0].sum())


@dataclass(frozen=True)
class Comparison:
    """The baseline against one other method on one dataset, over ``n`` paired runs."""

    other: str
    dataset: str
    n: int
    mean_difference: float  # baseline minus other; > 0: the baseline is better
    p_value: float
    verdict: str  # "win", "tie" or "loss" (for the baseline)


def compare(
    scores: Mapping[tuple[str, str, tuple], float],
    baseline: str,
    alpha: float = 0.05,
) -> list[Comparison]:
    """``scores[(method, dataset, pairing)]`` -> the baseline vs each other method per dataset.

    Pairs are the pairings both methods ran. The Wilcoxon test is exact for small samples; all
    differences zero (or fewer than 2 pairs) is a tie with p = 1. A significant difference is a
    win when the positive differences carry more rank than the negative ones (W+ > W-), a loss
    when less: the direction of the test itself, not of the mean, which one large difference
    can flip.
    """
    methods = sorted({m for m, _, _ in scores} - {baseline})
    datasets = sorted({d for _, d, _ in scores})
    results = []
    for other in methods:
        for dataset in datasets:
            pairings = sorted(
                p
                for m, d, p in scores
                if m == baseline and d == dataset and (other, d, p) in scores
            )
            diffs = np.array(
                [scores[(baseline, dataset, p)] - scores[(other, dataset, p)] for p in pairings]
            )
            if len(diffs) == 0:
                continue
            p_value = 1.0
            if len(diffs) >= 2 and np.any(diffs != 0):
                p_value = float(wilcoxon(diffs, alternative="two-sided").pvalue)
            verdict = "tie"
            w_plus, w_minus = signed_rank_sums(diffs)
            if p_value < alpha and w_plus != w_minus:
                verdict = "win" if w_plus > w_minus else "loss"
            results.append(
                Comparison(other, dataset, len(diffs), float(diffs.mean()), p_value, verdict)
            )
    return results


def tally(results: Sequence[Comparison]) -> dict[str, dict[str, int]]:
    """Per other method: how many datasets the baseline wins, ties and loses."""
    counts: dict[str, dict[str, int]] = {}
    for result in results:
        row = counts.setdefault(result.other, {"win": 0, "tie": 0, "loss": 0})
        row[result.verdict] += 1
    return counts


def format_comparison(results: Sequence[Comparison], baseline: str, alpha: float) -> str:
    """Markdown: the win/tie/loss table, then the per-dataset details."""
    lines = [
        f"{baseline} vs each method: datasets won / tied / lost (two-sided Wilcoxon signed-rank "
        f"test on paired areas under the curve, alpha = {alpha})",
        "",
        f"| {baseline} vs | wins | ties | losses |",
        "|---|---:|---:|---:|",
    ]
    for other, row in tally(results).items():
        lines.append(f"| {other} | {row['win']} | {row['tie']} | {row['loss']} |")
    lines += [
        "",
        f"| dataset | vs | n pairs | mean AUC difference ({baseline} - other) | p | verdict |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in sorted(results, key=lambda r: (r.dataset, r.other)):
        lines.append(
            f"| {r.dataset} | {r.other} | {r.n} | {r.mean_difference:+.4f} | {r.p_value:.3g} "
            f"| {r.verdict} |"
        )
    return "\n".join(lines) + "\n"
