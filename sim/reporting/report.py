"""Aggregate finished runs into a table and plots: ``cohort report DIR [DIR ...]``.

A run directory holds ``summary.json`` and ``metrics.jsonl`` as written by the runtime; a Hydra
multirun folder holds one run directory per job. Only those JSON/JSONL files are read (never YAML
or pickle, such as ``multirun.yaml``), and results are written as CSV, Markdown and PNG.

Runs are grouped by the Hydra overrides that differ between them (seeds ignored), and each final
metric is reported per group as ``mean ± std [low, high] (n)``: the sample std (ddof=1) and the
95% t-interval of the mean (Student's t with n - 1 degrees of freedom; a handful of seeds is
what presets run, where a bootstrap's interval is too narrow).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from sim.errors import CohortError
from sim.reporting.compare import area_under_curve, compare, format_comparison
from sim.reporting.plotting import (
    is_number,
    plot_groups,
    plot_log_log,
    plot_panels,
    plot_scatter,
    series,
)
from sim.runtime.outputs import METRICS, SUMMARY

STD_NOTE = (
    "± is the sample std (ddof=1) over runs; [low, high] the 95% t-interval of the mean; "
    "(n) the number of runs."
)


@dataclass(frozen=True)
class Run:
    """One finished run: its directory, resolved config, parsed overrides and results."""

    path: Path
    config: dict[str, Any]
    overrides: dict[str, str]  # "key=value" task overrides, in command-line order
    final: dict[str, Any]
    history: list[dict[str, Any]]  # one record per round, from metrics.jsonl
    wall_time_s: float | None
    rounds: int | None
    x: str | None = None  # the axis its records count (its protocol's Outcome.x)


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (ddof=1; 0 for one run) of one metric over ``n`` runs."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        array = np.asarray(values, dtype=float)
        std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
        return cls(float(array.mean()), std, len(array))

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% t-interval of the mean, ``mean ± t(0.975, n - 1) std / sqrt(n)``; None for
        one run."""
        if self.n < 2:
            return None
        half = float(scipy.stats.t.ppf(0.975, self.n - 1)) * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half


@dataclass(frozen=True)
class Row:
    """One group's statistics, by metric; metrics that no run of the group records are absent."""

    group: str
    stats: dict[str, Stat]


def load_runs(paths: Iterable[str | os.PathLike[str]]) -> list[Run]:
    """Load every run directory (one with ``summary.json``) under each path, itself included.

    Raises FileNotFoundError naming the path if a path is not a directory or holds no run.
    """
    runs: dict[Path, Run] = {}
    for path in map(Path, paths):
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such directory")
        found = sorted(
            (Path(root) for root, _, files in os.walk(path) if SUMMARY in files), key=_natural
        )
        if not found:
            raise FileNotFoundError(f"{path}: no run found (no {SUMMARY} in it or below it)")
        for run_dir in found:
            if run_dir.resolve() not in runs:
                runs[run_dir.resolve()] = _load_run(run_dir)
    return list(runs.values())


# Overrides that never define a group: seeds are averaged over, the rest only say where/how a
# run was written or resumed.
NOT_SWEPT = ("seed", "resume", "progress", "output_dir", "hydra.run.dir", "hydra.sweep.dir")


def group_runs(runs: Sequence[Run], ignore: Iterable[str] = NOT_SWEPT) -> dict[str, list[Run]]:
    """Group runs by the override keys whose values differ across runs, except ``ignore``.

    A label reads ``"algorithm.client_lr=0.1"`` (several keys joined by ``", "``); a run without
    the override takes the value from its config. If no key differs, the one group is ``"all"``.
    Groups are ordered by their values, numerically where they are numbers.
    """
    ignored = set(ignore)
    keys = [k for k in dict.fromkeys(k for run in runs for k in run.overrides) if k not in ignored]
    values = [{k: _value(run, k) for k in keys} for run in runs]
    swept = [k for k in keys if len({v[k] for v in values}) > 1]
    if not swept:
        return {"all": list(runs)} if runs else {}
    grouped: dict[tuple[str, ...], list[Run]] = {}
    for run, value in zip(runs, values, strict=True):
        grouped.setdefault(tuple(value[k] for k in swept), []).append(run)
    return {
        ", ".join(f"{k}={v}" for k, v in zip(swept, group, strict=True)): grouped[group]
        for group in sorted(grouped, key=lambda group: tuple(map(_order, group)))
    }


def matching_group(groups: Mapping[str, Sequence[Run]], wanted: str) -> str | None:
    """The group named ``wanted`` (``"algorithm=lm"``), else the one group whose label holds
    all of its ``key=value`` parts (a sweep of grids also names ``protocol.top_k=10``, ...);
    None if there is no such group or several."""
    if wanted in groups:
        return wanted
    parts = {part.strip() for part in wanted.split(",")}
    found = [label for label in groups if parts <= set(label.split(", "))]
    return found[0] if len(found) == 1 else None


def final_metrics(runs: Iterable[Run]) -> list[str]:
    """The numeric final metrics that any run records, in first-seen order."""
    return list(dict.fromkeys(k for run in runs for k, v in run.final.items() if is_number(v)))


def lower_is_better(metric: str) -> bool:
    """Losses, distances and errors go down; everything else (accuracies) up."""
    return any(word in metric for word in ("loss", "distance", "error"))


def mean_curve(histories: Sequence[Sequence[Mapping]], metric: str, x: str):
    """``(xs, mean)`` of ``metric`` over the histories that record it at each x."""
    by_x: dict[float, list[float]] = {}
    for history in histories:
        for at, value in zip(*series(history, metric, x), strict=True):
            by_x.setdefault(at, []).append(value)
    xs = np.array(sorted(by_x))
    return xs, np.array([np.mean(by_x[v]) for v in xs])


@dataclass(frozen=True)
class Match:
    """When a group's mean curve first reaches the baseline's mean final value."""

    group: str
    final: Stat
    reached_at: float | None  # the first x (None: never)
    fraction: float | None  # reached_at / the baseline's last x


def steps_to_match(
    groups: Mapping[str, Sequence[Run]], baseline: str, metric: str, x: str
) -> list[Match]:
    """For each group: the first ``x`` at which its mean ``metric`` curve reaches the mean final
    value of the ``baseline`` group (as low, for a loss), and that x as a fraction of the
    baseline's run length: SALT's "steps to match the baseline" (Rawat et al. 2024, Table 2)."""
    base_xs, base_curve = mean_curve([r.history for r in groups[baseline]], metric, x)
    target, length = base_curve[-1], base_xs[-1]
    matches = []
    for label, runs in groups.items():
        xs, curve = mean_curve([r.history for r in runs], metric, x)
        finals = [
            series(r.history, metric, x)[1][-1]
            for r in runs
            if series(r.history, metric, x)[1].size
        ]
        reached = curve <= target if lower_is_better(metric) else curve >= target
        at = float(xs[reached][0]) if reached.any() else None
        stat = Stat.of(finals)
        matches.append(Match(label, stat, at, at / length if at is not None else None))
    return matches


def plural(x: str) -> str:
    """``rounds`` for ``round``; ``labels`` stays ``labels``."""
    return x if x.endswith("s") else f"{x}s"


def format_matches(matches: Sequence[Match], baseline: str, metric: str, x: str) -> str:
    """Markdown: final value per group and the x (and fraction) at which it matches the baseline."""
    lines = [
        f"{metric}: final value, and the first {x} at which each group's mean curve reaches "
        f"the mean final value of {baseline} (fraction of {baseline}'s {plural(x)})",
        "",
        f"| group | final {metric} | {x} to match {baseline} | fraction |",
        "|---|---:|---:|---:|",
    ]
    for m in matches:
        at = f"{m.reached_at:g}" if m.reached_at is not None else "never"
        fraction = f"{m.fraction:.2f}" if m.fraction is not None else "-"
        lines.append(f"| {m.group} | {_cell(m.final)} | {at} | {fraction} |")
    return "\n".join(lines) + "\n"


def derived_metrics(
    run: Run,
    metric: str,
    at_rounds: Sequence[int] = (),
    target: float | None = None,
    x: str = "round",
    area: bool = False,
    interpolate: bool = False,
) -> dict[str, float]:
    """``metric`` at the given values of ``x`` (``metric@R``), and the first ``x`` at which it
    reaches ``target`` (``<x>s_to_<target>``, e.g. ``rounds_to_0.8``, ``labels_to_0.85``: >= for
    accuracies, <= for losses, distances and errors); a run that never reaches the target has
    no value, so the table's n counts the runs that did. With ``interpolate``, the ``x`` where
    the straight line between the last point short of the target and the first that reaches it
    crosses the target (finer than the evaluated points: batches of 10,000 labels). With
    ``area``, also the curve's mean height over its ``x`` range (``<metric>_area``,
    :func:`area_under_curve`)."""
    xs, values = series(run.history, metric, x)
    derived = {f"{metric}@{r}": float(values[xs == r][0]) for r in at_rounds if r in xs}
    if target is not None:
        reached = values <= target if lower_is_better(metric) else values >= target
        if reached.any():
            i = int(np.argmax(reached))
            at = float(xs[i])
            if interpolate and i > 0 and np.isfinite(values[i - 1]):  # short of the target
                slope = (xs[i] - xs[i - 1]) / (values[i] - values[i - 1])
                at = float(xs[i - 1] + (target - values[i - 1]) * slope)
            derived[f"{plural(x)}_to_{target:g}"] = at
    if area and len(xs):
        derived[f"{metric}_area"] = area_under_curve(run.history, metric, x)
    return derived


def summarize(groups: Mapping[str, Sequence[Run]], metrics: Sequence[str]) -> list[Row]:
    """Per group, the :class:`Stat` (mean, sample std, n) of each final metric."""
    rows = []
    for label, runs in groups.items():
        stats = {}
        for metric in metrics:
            values = [run.final[metric] for run in runs if is_number(run.final.get(metric))]
            if values:
                stats[metric] = Stat.of(values)
        rows.append(Row(label, stats))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """An aligned text table, one line per group, cells ``mean ± std [low, high] (n)``, plus a
    note on what they are."""
    metrics = _columns(rows)
    table = [["group", *metrics]] + [[row.group, *map(_cell, _stats(row, metrics))] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in [*lines, "", STD_NOTE])


def format_markdown(rows: Sequence[Row]) -> str:
    """The table as GitHub Markdown, with the note on std below it."""
    metrics = _columns(rows)
    lines = [
        "| group | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
        *(
            "| "
            + " | ".join([row.group.replace("|", "\\|"), *map(_cell, _stats(row, metrics))])
            + " |"
            for row in rows
        ),
    ]
    return "\n".join([*lines, "", STD_NOTE, ""])


def write_csv(rows: Sequence[Row], path: str | os.PathLike[str]) -> None:
    """Write ``group`` and per metric ``<metric>_mean``, ``_std`` (ddof=1), ``_low``, ``_high``
    (the 95% t-interval; blank for one run) and ``_n`` (all blank if absent)."""
    metrics = _columns(rows)
    parts = ("mean", "std", "low", "high", "n")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["group", *(f"{m}_{part}" for m in metrics for part in parts)])
        for row in rows:
            cells: list[object] = [row.group]
            for stat in _stats(row, metrics):
                if stat is None:
                    cells += [""] * len(parts)
                    continue
                low, high = stat.interval or ("", "")
                cells += [stat.mean, stat.std, low, high, stat.n]
            writer.writerow(cells)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the table of final metrics; write report.csv, report.md, report_<metric>.png,
    and what the options ask for (``--match``, ``--compare`` or ``--by`` panels, ``--slope``,
    ``--scatter``)."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    at_rounds = checked_rounds(parser, args)
    try:
        runs = load_runs(args.dirs)
        if not any(series(run.history, args.metric, args.x)[0].size for run in runs):
            raise CohortError(unrecorded(runs, args.metric, args.x))
    except (FileNotFoundError, CohortError) as exc:
        print(f"cohort: error: {exc}", file=sys.stderr)
        return 2
    if args.match:  # none: a preset's report over part of its sweep (the rest still comes)
        found = matching_group(groups := group_runs(runs), args.match)
        if found is None:
            print(f"cohort: warning: --match {args.match}: no such group, or several, in these "
                  f"runs ({', '.join(groups)}); no match table", file=sys.stderr)  # fmt: skip
        args.match = found
    options = (args.metric, at_rounds, args.target, args.x, args.area, args.interpolate)
    runs = [replace(run, final={**run.final, **derived_metrics(run, *options)}) for run in runs]
    groups = group_runs(runs)
    out = Path(args.out or args.dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    outputs = write_summary(runs, groups, args, out)
    if args.match:
        outputs.append(write_match(groups, args, out))
    if args.compare:
        outputs += write_comparison(
            runs, args.compare, args.by, args.metric, args.x, args.alpha, out
        )
        for budget in args.upto:  # the same runs, stopped at smaller budgets
            outputs.append(write_tally(runs, args, out, budget))
    elif args.by:
        outputs.append(write_panels(runs, args, out))
    if args.slope:
        outputs += write_slopes(runs, args.slope, out)
    if args.scatter:
        outputs.append(write_scatter(runs, groups, args.scatter.split(","), args.by, out))
    print(f"\n{len(runs)} runs in {len(groups)} groups; wrote " + ", ".join(map(str, outputs)))
    return 0


AXES = ("round", "step", "labels", "queries")  # built-in protocols' axes: runs without "x"


def unrecorded(runs: Sequence[Run], metric: str, x: str) -> str:
    """Why no curve of ``metric`` over ``x`` can be drawn: the numeric metrics the runs do record
    per ``x``, ``metric`` named apart when it is recorded but never as a number, and, when they
    record none per ``x``, what they record along the other axes (a sweep of a protocol that
    counts steps reported with the default ``--x round``)."""

    def numeric(axis: str) -> list[str]:
        return sorted({k for run in runs for rec in run.history for k, v in rec.items()
                       if is_number(v) and is_number(rec.get(axis))} - {axis})  # fmt: skip

    per_x = numeric(x)
    listed = ", ".join(per_x) or "-"
    if any(metric in rec for run in runs for rec in run.history):
        return f"{metric!r} is recorded, but never as a number per {x}; numeric metrics: {listed}"
    axes = dict.fromkeys([*(run.x for run in runs if run.x), *AXES])  # the runs' own first
    along = [] if per_x else [(axis, numeric(axis)) for axis in axes if axis != x]
    others = "".join(f"; per {axis}: {', '.join(found)} (--x {axis} --metric {found[0]})"
                     for axis, found in along if found)  # fmt: skip
    return f"no run records {metric!r} per {x}; numeric metrics: {listed}{others}"


def argument_parser() -> argparse.ArgumentParser:
    """``cohort report``'s options."""
    parser = argparse.ArgumentParser(
        prog="python -m sim.reporting.report", description="Tabulate and plot finished Cohort runs."
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run or multirun directories")
    parser.add_argument("--metric", default="test_accuracy", help="per-round metric to plot")
    parser.add_argument("--out", help="output directory (default: the first DIR)")
    parser.add_argument(
        "--at-rounds", default="", help="comma-separated rounds at which to tabulate --metric"
    )
    parser.add_argument(
        "--target", type=float, help="tabulate the first round --metric reaches this"
    )
    parser.add_argument(
        "--interpolate",
        action="store_true",
        help="with --target: where the line between the evaluated points crosses the target",
    )
    parser.add_argument("--x", default="round", help="x axis of the curves (e.g. labels)")
    parser.add_argument(
        "--area", action="store_true", help="tabulate the mean height of --metric over --x"
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="in the curves, a run that ended early holds its last value (e.g. coverage)",
    )
    parser.add_argument(
        "--compare",
        metavar="KEY=BASELINE",
        help="win/tie/loss of BASELINE against the other values of KEY (e.g. algorithm=margin), "
        "on the area under --metric vs --x, paired by every other override, per --by value",
    )
    parser.add_argument(
        "--by",
        help="the key that names a dataset: with --compare, the pairing; else one panel of the "
        "curves (and of --scatter) per value",
    )
    parser.add_argument(
        "--scatter",
        metavar="X,Y",
        help="plot each group's mean final Y against its mean final X (e.g. churn,test_accuracy)",
    )
    parser.add_argument(
        "--match",
        metavar="KEY=BASELINE",
        help="the first --x at which each group's mean --metric curve reaches the final value "
        "of the group KEY=BASELINE (e.g. algorithm=lm; or the one group whose label holds these "
        "key=value parts), and its fraction of the baseline's run",
    )
    parser.add_argument(
        "--slope",
        metavar="KEY:METRIC",
        help="per group of the other overrides, the least-squares slope of log final METRIC on "
        "log KEY over the runs (a growth rate, e.g. protocol.pool_size:excess_query_cost)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="with --compare: test level")
    parser.add_argument(
        "--upto",
        type=budgets,
        default=[],
        metavar="B1,B2,...",
        help="with --compare: also the comparison of the curves up to each --x budget (e.g. "
        "100,300,600 labels), one table each",
    )
    return parser


def budgets(text: str) -> list[float]:
    """``--upto``'s comma-separated positive numbers."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not numbers: {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"budgets must be > 0 (got {text!r})")
    return values


def checked_rounds(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    """``--at-rounds`` as numbers, after refusing options given in the wrong form."""
    if args.compare and ("=" not in args.compare or not args.by):
        parser.error("--compare takes KEY=BASELINE and needs --by KEY")
    if args.upto and not args.compare:
        parser.error("--upto needs --compare")
    if args.interpolate and args.target is None:
        parser.error("--interpolate needs --target")
    if args.slope and ":" not in args.slope:
        parser.error("--slope takes KEY:METRIC")
    if args.scatter and len(args.scatter.split(",")) != 2:
        parser.error("--scatter takes two final metrics, X,Y")
    try:
        return [int(r) for r in args.at_rounds.split(",") if r.strip()]
    except ValueError:
        parser.error(f"--at-rounds takes comma-separated whole numbers (got {args.at_rounds!r})")


def write_summary(
    runs: list[Run], groups: dict[str, list[Run]], args: argparse.Namespace, out: Path
) -> list[Path]:
    """The table of final metrics (printed, ``report.csv``, ``report.md``) and the mean ± std
    curves of ``--metric`` (``report_<metric>.png``)."""
    rows = summarize(groups, final_metrics(runs))
    print(format_table(rows))
    outputs = [out / "report.csv", out / "report.md", out / f"report_{_safe(args.metric)}.png"]
    write_csv(rows, outputs[0])
    outputs[1].write_text(format_markdown(rows))
    plot_groups(
        {label: [run.history for run in group] for label, group in groups.items()},
        args.metric,
        outputs[2],
        title=f"{args.metric}: mean ± sample std over seeds",
        x=args.x,
        hold=args.hold,
    )
    return outputs


def write_match(groups: dict[str, list[Run]], args: argparse.Namespace, out: Path) -> Path:
    """``--match``: the --x at which each group first reaches the baseline's final value."""
    steps = steps_to_match(groups, args.match, args.metric, args.x)
    text = format_matches(steps, args.match, args.metric, args.x)
    print("\n" + text)
    (out / "report_match.md").write_text(text)
    return out / "report_match.md"


def write_panels(runs: list[Run], args: argparse.Namespace, out: Path) -> Path:
    """``--by`` without ``--compare``: one panel of curves per value of ``--by``."""
    path = out / f"report_{_safe(args.metric)}_by_{_safe(args.by)}.png"
    panels = {
        f"{args.by}={value}": {
            label: [r.history for r in group] for label, group in members.items()
        }
        for value, members in panel_groups(runs, args.by).items()
    }
    title = f"{args.metric}: mean ± sample std over seeds"
    plot_panels(panels, args.metric, path, title=title, x=args.x, hold=args.hold)
    return path


def write_slopes(runs: list[Run], slope: str, out: Path) -> list[Path]:
    """``--slope KEY:METRIC``: the log-log slope per group (a table and a plot)."""
    key, metric = slope.split(":", 1)
    fits = log_log_slopes(runs, key, metric)
    text = format_slopes(fits, key, metric)
    print("\n" + text)
    outputs = [out / "report_slope.md", out / "report_slope.png"]
    outputs[0].write_text(text)
    points = {
        label: [(float(_value(r, key)), r.final.get(metric)) for r in group]
        for label, group in group_runs(runs, (*NOT_SWEPT, key)).items()
    }
    plot_log_log(points, fits, (key, metric), outputs[1])
    return outputs


def panel_groups(runs: Sequence[Run], by: str) -> dict[str, dict[str, list[Run]]]:
    """Per value of ``by`` (a dataset), its runs grouped by the other swept overrides."""
    return {
        value: group_runs([run for run in runs if _value(run, by) == value], (*NOT_SWEPT, by))
        for value in sorted({_value(run, by) for run in runs}, key=_order)
    }


def log_log_slopes(
    runs: Sequence[Run], key: str, metric: str
) -> dict[str, tuple[float, float, int, int]]:
    """Per group of the overrides other than ``key`` (and seeds), ``(slope, intercept, n,
    left out)`` of the least-squares line of ``log metric`` on ``log key`` over its runs with a
    positive value (the runs without one, e.g. a cost of 0 or none, are counted, not fitted)."""
    fits = {}
    for label, group in group_runs(runs, (*NOT_SWEPT, key)).items():
        points = [
            (float(_value(run, key)), float(run.final[metric]))
            for run in group
            if is_number(run.final.get(metric)) and run.final[metric] > 0
        ]
        xs, ys = np.log([p[0] for p in points]), np.log([p[1] for p in points])
        if len(set(xs)) >= 2:
            slope, intercept = np.polyfit(xs, ys, 1)
            fits[label] = (float(slope), float(intercept), len(points), len(group) - len(points))
    return fits


def format_slopes(fits: Mapping[str, tuple[float, float, int, int]], key: str, metric: str) -> str:
    lines = [
        f"| group | slope of log {metric} on log {key} | runs fitted | left out (no value > 0) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {label} | {slope:.3f} | {n} | {out} |" for label, (slope, _, n, out) in fits.items()
    ]
    return "\n".join(lines) + "\n"


def write_scatter(
    runs: Sequence[Run],
    groups: Mapping[str, list[Run]],
    keys: Sequence[str],
    by: str | None,
    out: Path,
) -> Path:
    """Each group's final ``keys[1]`` against ``keys[0]`` (one panel per ``by`` value)."""
    panels = {f"{by}={v}": m for v, m in panel_groups(runs, by).items()} if by else {"": groups}
    points = {
        panel: {
            label: pairs
            for label, group in members.items()
            if (pairs := [(r.final[keys[0]], r.final[keys[1]]) for r in group
                          if is_number(r.final.get(keys[0])) and is_number(r.final.get(keys[1]))])
        }  # a group that recorded no such pair (e.g. no epsilon: not private) has no point
        for panel, members in panels.items()
    }  # fmt: skip
    path = out / f"report_scatter_{_safe(keys[0])}_{_safe(keys[1])}.png"
    title = f"{keys[1]} vs {keys[0]}: mean ± sample std over seeds"
    plot_scatter(points, (keys[0], keys[1]), path, title=title)
    return path


def paired_areas(
    runs: Sequence[Run], key: str, by: str, metric: str, x: str, upto: float | None = None
) -> dict[tuple[str, str, tuple], float]:
    """Each run's area under ``metric`` vs ``x`` (up to ``upto``), keyed by its ``key`` value,
    its ``by`` value and its pairing (every other override, the seed included)."""
    ignored = (set(NOT_SWEPT) - {"seed"}) | {key, by}
    pairing_keys = sorted({k for run in runs for k in run.overrides} - ignored)
    scores = {}
    for run in runs:
        auc = area_under_curve(run.history, metric, x, upto)
        if auc is not None:
            pairing = tuple(_value(run, k) for k in pairing_keys)
            scores[(_value(run, key), _value(run, by), pairing)] = auc
    return scores


def write_tally(runs: Sequence[Run], args: argparse.Namespace, out: Path, budget: float) -> Path:
    """``--upto``: the comparison of each run's curve up to ``budget`` (``--x``) alone, in
    ``report_compare_upto_<budget>.md``."""
    key, baseline = _split_override(args.compare)
    scores = paired_areas(runs, key, args.by, args.metric, args.x, budget)
    text = format_comparison(compare(scores, baseline, args.alpha), baseline, args.alpha)
    print(f"\nup to {args.x} = {budget:g}:\n{text}")
    path = out / f"report_compare_upto_{budget:g}.md"
    path.write_text(f"Up to {args.x} = {budget:g}.\n\n{text}")
    return path


def write_comparison(
    runs: Sequence[Run], compare_arg: str, by: str, metric: str, x: str, alpha: float, out: Path
) -> list[Path]:
    """Print and write the win/tie/loss comparison; one plot of the curves per ``by`` value."""
    key, baseline = _split_override(compare_arg)
    scores = paired_areas(runs, key, by, metric, x)
    text = format_comparison(compare(scores, baseline, alpha), baseline, alpha)
    print("\n" + text)
    written = [out / "report_compare.md"]
    written[0].write_text(text)
    for dataset in sorted({_value(run, by) for run in runs}):
        chosen = [run for run in runs if _value(run, by) == dataset]
        panels = {
            panel: {
                f"{key}={value}": [run.history for run in members if _value(run, key) == value]
                for value in sorted({_value(run, key) for run in members})
            }
            for panel, members in group_runs(chosen, ignore=(*NOT_SWEPT, by, key)).items()
        }
        path = out / f"report_{_safe(by)}_{_safe(dataset)}.png"
        title = f"{dataset}: {metric} vs {x}, mean ± sample std over seeds"
        plot_panels(panels, metric, path, title=title, x=x)
        written.append(path)
    return written


def _load_run(run_dir: Path) -> Run:
    summary = _read_json(run_dir / SUMMARY)
    if not isinstance(summary, dict):
        raise CohortError(f"{run_dir / SUMMARY}: expected a JSON object")
    metrics = run_dir / METRICS
    history = []
    if metrics.is_file():
        for number, line in enumerate(metrics.read_text().splitlines(), 1):
            if line.strip():
                record = _parse(line, f"{metrics}:{number}")
                if not isinstance(record, dict):
                    raise CohortError(f"{metrics}:{number}: expected a JSON object (a record)")
                history.append(record)
    for key, kind in (("config", dict), ("final", dict), ("overrides", list), ("x", str)):
        if summary.get(key) is not None and not isinstance(summary[key], kind):
            what = {dict: "an object", list: "a list", str: "a string"}[kind]
            raise CohortError(f"{run_dir / SUMMARY}: its {key!r} is not {what}")
    return Run(
        path=run_dir,
        config=summary.get("config") or {},
        overrides=dict(_split_override(str(o)) for o in summary.get("overrides") or []),
        final=summary.get("final") or {},
        history=history,
        wall_time_s=summary.get("wall_time_s"),
        rounds=summary.get("rounds"),
        x=summary.get("x"),
    )


def _read_json(path: Path) -> Any:
    return _parse(path.read_text(), str(path))


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CohortError(f"{where}: invalid JSON ({exc.msg})") from None


def _split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+"), value


def _value(run: Run, key: str) -> str:
    """The run's override value for ``key``, else its config value, else ``"unset"``."""
    if key in run.overrides:
        return run.overrides[key]
    node: Any = run.config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return "unset"
        node = node[part]
    return node if isinstance(node, str) else json.dumps(node)


def _order(value: str) -> tuple[int, float, str]:
    try:
        number = float(value)
    except ValueError:
        return 1, 0.0, value
    return (0, number, "") if not math.isnan(number) else (1, 0.0, value)


def _natural(path: Path) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", str(path)) if p]


def _columns(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(m for row in rows for m in row.stats))


def _stats(row: Row, metrics: Sequence[str]) -> list[Stat | None]:
    return [row.stats.get(m) for m in metrics]


def _cell(stat: Stat | None) -> str:
    if stat is None:
        return "-"
    if stat.interval is None:
        return f"{stat.mean:.4g} ({stat.n})"
    low, high = stat.interval
    return f"{stat.mean:.4g} ± {stat.std:.4g} [{low:.4g}, {high:.4g}] ({stat.n})"


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


if __name__ == "__main__":
    raise SystemExit(main())
