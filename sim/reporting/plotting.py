"""PNG plots of per-round metrics: one run's curves, and seed-averaged curves per group.

Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so plotting needs
no display, holds no global state and is safe in Ray workers and headless CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def series(history: Iterable[Mapping], key: str, x: str = "round") -> tuple[np.ndarray, np.ndarray]:
    """``(x values, values)`` of ``key`` over the records with a numeric ``key`` and ``x``."""
    points = [
        (record[x], record[key])
        for record in history
        if is_number(record.get(key)) and is_number(record.get(x))
    ]
    rounds, values = zip(*points, strict=True) if points else ((), ())
    return np.asarray(rounds, dtype=float), np.asarray(values, dtype=float)


def plot_curves(
    history: Sequence[Mapping],
    path: str | os.PathLike[str],
    keys: Sequence[str] = ("test_accuracy", "test_loss"),
    title: str | None = None,
    x: str = "round",
) -> None:
    """Write one PNG with a subplot of ``key`` vs ``x`` for each key that ``history`` records.

    Rounds without the key (e.g. non-evaluation rounds) are skipped. If no key is recorded at
    all, the PNG holds a single panel saying so, so the file always exists after a run.
    """
    curves = {key: series(history, key, x) for key in keys}
    curves = {key: curve for key, curve in curves.items() if len(curve[0])}
    fig = Figure(figsize=(4.5 * max(len(curves), 1), 3.5), layout="constrained")
    if curves:
        axes = fig.subplots(1, len(curves), squeeze=False)[0]
        for ax, (key, (rounds, values)) in zip(axes, curves.items(), strict=True):
            ax.plot(rounds, values, marker="o" if len(rounds) < 30 else None, markersize=3)
            ax.set(xlabel=x, ylabel=key, title=key)
            ax.grid(alpha=0.3)
    else:
        _no_data(fig.subplots(), f"no {', '.join(keys)} recorded")
    _save(fig, path, title)


def plot_groups(
    groups: Mapping[str, Sequence[Sequence[Mapping]]],
    key: str,
    path: str | os.PathLike[str],
    title: str | None = None,
    x: str = "round",
    hold: bool = False,
) -> None:
    """Write one PNG of ``key`` vs ``x``: per group, the mean over its histories ± one std band.

    ``groups`` maps a label to one history per seed. At each x the mean and sample std
    (ddof=1) are taken over the histories that record ``key`` there.
    """
    plot_panels({"": groups}, key, path, title, x, hold)


def plot_panels(
    panels: Mapping[str, Mapping[str, Sequence[Sequence[Mapping]]]],
    key: str,
    path: str | os.PathLike[str],
    title: str | None = None,
    x: str = "round",
    hold: bool = False,
) -> None:
    """Like :func:`plot_groups`, one subplot per panel (``panels`` maps a panel title to its
    groups); a group keeps its colour across panels. Many or long labels go in a legend below
    each panel (the figure grows to hold it), ``key=unset`` parts left out."""
    labels = list(dict.fromkeys(label for groups in panels.values() for label in groups))
    below = len(labels) > 6 or max((len(legend_label(x)) for x in labels), default=0) > 40
    lines = max((len(groups) for groups in panels.values()), default=0) if below else 0
    fig = Figure(figsize=(6.5 * max(len(panels), 1), 4.0 + 0.17 * lines), layout="constrained")
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    colours = label_colours(labels)
    for ax, (panel, groups) in zip(axes, panels.items(), strict=True):
        if not _draw_groups(ax, groups, key, x, colours, hold):
            _no_data(ax, f"no {key} recorded")
            continue
        ax.set(xlabel=x, ylabel=key, title=panel or None)
        ax.grid(alpha=0.3)
        if below:
            ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.14))
        else:
            ax.legend(fontsize="x-small")
    _save(fig, path, title)


def plot_scatter(
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    keys: tuple[str, str],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> None:
    """One subplot per panel; per group the mean of its runs' ``(x, y)`` final metrics with one
    std error bar each way (e.g. a Pareto plot of accuracy against churn)."""
    fig = Figure(figsize=(6.5 * max(len(panels), 1), 4.5), layout="constrained")
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    labels = list(dict.fromkeys(label for groups in panels.values() for label in groups))
    colours = label_colours(labels)
    markers = "osD^v<>ph*"
    for ax, (panel, groups) in zip(axes, panels.items(), strict=True):
        for i, (label, points) in enumerate(groups.items()):
            xy = np.asarray(points, dtype=float).reshape(-1, 2)
            mean, std = xy.mean(axis=0), sample_std(xy)
            marker = markers[i // 10 % len(markers)]
            ax.errorbar(
                *mean,
                xerr=std[0],
                yerr=std[1],
                color=colours[label],
                capsize=2,
                marker=marker,
                label=f"{label} (n={len(xy)})",
            )
        if not groups:
            _no_data(ax, f"no {keys[0]}, {keys[1]} recorded")
            continue
        ax.set(xlabel=keys[0], ylabel=keys[1], title=panel or None)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="xx-small")
    _save(fig, path, title)


def plot_log_log(
    points: Mapping[str, Sequence[tuple[float, object]]],
    fits: Mapping[str, tuple[float, float, int, int]],
    keys: tuple[str, str],
    path: str | os.PathLike[str],
) -> None:
    """Each group's runs as ``(x, y)`` points on log-log axes with its fitted line
    ``log y = slope log x + intercept`` (``fits``); non-positive or missing y are left out."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (label, pairs) in enumerate(points.items()):
        xy = np.array([(x, y) for x, y in pairs if is_number(y) and y > 0], dtype=float)
        if not len(xy):
            continue
        ax.scatter(xy[:, 0], xy[:, 1], s=10, color=f"C{i % 10}", alpha=0.6)
        if label in fits:
            slope, intercept = fits[label][:2]
            xs = np.array([xy[:, 0].min(), xy[:, 0].max()])
            ax.plot(xs, np.exp(intercept) * xs**slope, color=f"C{i % 10}",
                    label=f"{label}: slope {slope:.3f}")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel=keys[0], ylabel=keys[1])
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="x-small")
    _save(fig, path, f"{keys[1]} vs {keys[0]} (log-log)")


def mean_band(
    histories: Sequence[Sequence[Mapping]], key: str, x: str = "round", hold: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(grid, mean, std)`` of ``key`` over ``histories``. Histories recorded at different x are
    interpolated on the union of their x, within each one's range; past its end a history holds
    its last value when ``hold`` (a cumulative metric of a run that finished), else drops out."""
    curves = [series(history, key, x) for history in histories]
    curves = [(xs, values) for xs, values in curves if len(xs)]
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    grid = np.unique(np.concatenate([xs for xs, _ in curves]))
    stack = np.full((len(curves), len(grid)), np.nan)
    for row, (xs, values) in zip(stack, curves, strict=True):
        order = np.argsort(xs, kind="stable")
        xs, values = xs[order], values[order]
        inside = (grid >= xs[0]) & (grid <= xs[-1])
        row[inside] = np.interp(grid[inside], xs, values)
        if hold:
            row[grid > xs[-1]] = values[-1]
    return grid, np.nanmean(stack, axis=0), sample_std(stack)


def sample_std(stack: np.ndarray) -> np.ndarray:
    """Per column, the sample std (ddof=1) of the rows that are not NaN; 0 where fewer than 2."""
    count = np.sum(~np.isnan(stack), axis=0)
    spread = np.nansum((stack - np.nanmean(stack, axis=0)) ** 2, axis=0)
    return np.sqrt(np.divide(spread, count - 1, out=np.zeros(stack.shape[1]), where=count > 1))


def _draw_groups(
    ax: Axes,
    groups: Mapping[str, Sequence[Sequence[Mapping]]],
    key: str,
    x: str,
    colours: Mapping[str, str],
    hold: bool = False,
) -> bool:
    """Mean ± std line per group on ``ax`` (:func:`mean_band`); False if no group records
    ``key``."""
    plotted = False
    for label, histories in groups.items():
        grid, mean, std = mean_band(histories, key, x, hold)
        if not len(grid):
            continue
        ax.plot(
            grid, mean, color=colours[label], label=f"{legend_label(label)} (n={len(histories)})"
        )
        ax.fill_between(grid, mean - std, mean + std, color=colours[label], alpha=0.12)
        plotted = True
    return plotted


def legend_label(label: str) -> str:
    """A group's label without its ``key=unset`` parts (a key that run's config lacks), or the
    whole label if nothing else is left."""
    kept = [part for part in label.split(", ") if not part.endswith("=unset")]
    return ", ".join(kept) or label


def label_colours(labels: Sequence[str]) -> dict[str, object]:
    """A colour per label: the default cycle up to 10 labels, then tab20 (20 distinct), then
    evenly spaced hues of turbo."""
    from matplotlib import colormaps

    if len(labels) <= 10:
        return {label: f"C{i}" for i, label in enumerate(labels)}
    if len(labels) <= 20:
        return {label: colormaps["tab20"](i) for i, label in enumerate(labels)}
    cmap = colormaps["turbo"]
    return {label: cmap(i / (len(labels) - 1)) for i, label in enumerate(labels)}


def is_number(value: object) -> bool:
    """A real number (an int or float, not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _save(fig: Figure, path: str | os.PathLike[str], title: str | None) -> None:
    if title:
        fig.suptitle(title)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
