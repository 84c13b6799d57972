"""sim.reporting.report and .plotting on fake run directories: grouping, statistics, CLI outputs."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest

from sim.reporting import report
from sim.reporting.plotting import legend_label, mean_band, plot_curves, plot_groups
from sim.reporting.report import (
    Run,
    Stat,
    derived_metrics,
    format_matches,
    format_table,
    group_runs,
    load_runs,
    log_log_slopes,
    main,
    steps_to_match,
    summarize,
    write_scatter,
)

LRS = ("0.1", "0.01")
SEEDS = (0, 1, 2)
# Final test accuracy / loss per (lr, seed); hand-computed statistics below.
ACCURACY = {"0.1": (0.6, 0.7, 0.8), "0.01": (0.5, 0.5, 0.5)}
LOSS = {"0.1": (1.0, 2.0, 3.0), "0.01": (4.0, 4.0, 4.0)}
STD_01 = math.sqrt(((0.6 - 0.7) ** 2 + 0 + (0.8 - 0.7) ** 2) / 2)  # sample std (ddof=1): 0.1
T_975_2 = 4.302652729749464  # Student's t, 97.5% quantile, 2 degrees of freedom (tables)
HALF_01 = T_975_2 * STD_01 / math.sqrt(3)  # the 95% interval's half-width: 0.2484


def write_run(
    run_dir: Path, overrides: list[str], final: dict, rounds: int = 4, config: dict | None = None
) -> None:
    """A run directory as the runtime writes it; evaluation every second round."""
    run_dir.mkdir(parents=True)
    summary = {
        "config": config or {"algorithm": {"client_lr": 0.05}, "seed": 0},
        "overrides": overrides,
        "final": final,
        "wall_time_s": 1.5,
        "rounds": rounds,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    records = []
    for r in range(1, rounds + 1):
        record = {"round": r, "train_loss": 1.0 / r, "dropped_clients": 0, "round_time_s": 0.1}
        if r % 2 == 0:
            record |= {"test_accuracy": final["test_accuracy"] * r / rounds, "test_loss": 1.0}
        records.append(record)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in records))


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    """2 learning rates x 3 seeds in Hydra's multirun layout, with a multirun.yaml at the root."""
    root = tmp_path / "multirun"
    for job, (lr, seed) in enumerate((lr, seed) for lr in LRS for seed in SEEDS):
        final = {
            "test_accuracy": ACCURACY[lr][seed],
            "test_loss": LOSS[lr][seed],
            "diverged": False,
            "note": "text",
        }
        write_run(root / str(job), [f"algorithm.client_lr={lr}", f"seed={seed}"], final)
    (root / "multirun.yaml").write_text("!!python/object/apply:os.system ['exit 1']\n")
    return root


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Paths of every file opened while the test runs (via the 'open' audit event)."""
    seen: list[str] = []
    active = True

    def hook(event: str, args: tuple) -> None:
        if active and event == "open" and isinstance(args[0], str | Path):
            seen.append(str(args[0]))

    sys.addaudithook(hook)  # audit hooks cannot be removed; this one goes quiet after the test
    yield seen
    active = False


def test_load_runs_finds_jobs_in_order_and_accepts_a_run_dir(multirun: Path) -> None:
    runs = load_runs([multirun])
    assert [run.path.name for run in runs] == ["0", "1", "2", "3", "4", "5"]
    assert runs[0].overrides == {"algorithm.client_lr": "0.1", "seed": "0"}
    assert runs[0].final["test_accuracy"] == 0.6
    assert [rec["round"] for rec in runs[0].history] == [1, 2, 3, 4]
    assert runs[0].rounds == 4 and runs[0].wall_time_s == 1.5
    assert [run.path for run in load_runs([multirun / "3"])] == [multirun / "3"]
    assert len(load_runs([multirun, multirun / "3"])) == 6  # no duplicates


def test_group_runs_by_swept_override_ignoring_seed(multirun: Path) -> None:
    groups = group_runs(load_runs([multirun]))
    assert list(groups) == ["algorithm.client_lr=0.01", "algorithm.client_lr=0.1"]
    assert [run.path.name for run in groups["algorithm.client_lr=0.1"]] == ["0", "1", "2"]
    assert [run.path.name for run in groups["algorithm.client_lr=0.01"]] == ["3", "4", "5"]

    per_seed = group_runs(load_runs([multirun]), ignore=())
    assert len(per_seed) == 6
    assert "algorithm.client_lr=0.1, seed=2" in per_seed


def test_group_runs_single_group_and_config_fallback(tmp_path: Path) -> None:
    final = {"test_accuracy": 0.5, "test_loss": 1.0}
    write_run(tmp_path / "a", ["seed=0", "env=mnist"], final)
    write_run(tmp_path / "b", ["seed=1", "env=mnist"], final)
    assert list(group_runs(load_runs([tmp_path]))) == ["all"]

    # A run without the override is labelled with the value from its config.
    write_run(tmp_path / "c", ["seed=0", "env=mnist", "algorithm.client_lr=0.1"], final)
    groups = group_runs(load_runs([tmp_path]))
    assert {k: len(v) for k, v in groups.items()} == {
        "algorithm.client_lr=0.05": 2,
        "algorithm.client_lr=0.1": 1,
    }


def test_summarize_mean_sample_std_and_t_interval(multirun: Path) -> None:
    runs = load_runs([multirun])
    rows = summarize(group_runs(runs), ["test_accuracy", "test_loss", "missing"])
    by_group = {row.group: row.stats for row in rows}
    high = by_group["algorithm.client_lr=0.1"]
    assert high["test_accuracy"].mean == pytest.approx(0.7)
    assert high["test_accuracy"].std == pytest.approx(STD_01)
    assert high["test_accuracy"].n == 3
    assert high["test_loss"] == Stat(2.0, pytest.approx(1.0), 3)  # losses 1, 2, 3
    assert high["test_accuracy"].interval == pytest.approx((0.7 - HALF_01, 0.7 + HALF_01))
    assert by_group["algorithm.client_lr=0.01"]["test_accuracy"] == Stat(pytest.approx(0.5), 0.0, 3)
    assert "missing" not in high

    single = summarize({"one": runs[:1]}, ["test_accuracy"])
    assert single[0].stats["test_accuracy"] == Stat(0.6, 0.0, 1)
    assert single[0].stats["test_accuracy"].interval is None  # no spread from one run


def test_format_table_text(multirun: Path) -> None:
    rows = summarize(group_runs(load_runs([multirun])), ["test_accuracy", "test_loss"])
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["group", "test_accuracy", "test_loss"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("algorithm.client_lr=0.01")
    assert "0.5 ± 0 [0.5, 0.5] (3)" in lines[2] and "4 ± 0 [4, 4] (3)" in lines[2]
    assert "0.7 ± 0.1 [0.4516, 0.9484] (3)" in lines[3]
    assert "2 ± 1 [-0.4841, 4.484] (3)" in lines[3]
    column = lines[0].index("test_accuracy")
    assert lines[2].index("0.5 ±") == lines[3].index("0.7 ±") == column
    assert "sample std (ddof=1)" in text and "95% t-interval" in text


def test_main_writes_reports_and_reads_no_yaml(
    multirun: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    opened: list[str],
) -> None:
    out = tmp_path / "report"
    assert main([str(multirun), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "algorithm.client_lr=0.1" in stdout and "0.7 ± 0.1 [0.4516, 0.9484] (3)" in stdout
    assert "diverged" not in stdout and "note" not in stdout  # numeric metrics only
    for name in ("report.csv", "report.md", "report_test_accuracy.png"):
        assert str(out / name) in stdout
    png = (out / "report_test_accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000

    with open(out / "report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["group"] for row in table] == [
        "algorithm.client_lr=0.01",
        "algorithm.client_lr=0.1",
    ]
    assert float(table[1]["test_accuracy_mean"]) == pytest.approx(0.7)
    assert float(table[1]["test_accuracy_std"]) == pytest.approx(STD_01)
    assert float(table[1]["test_accuracy_low"]) == pytest.approx(0.7 - HALF_01)
    assert float(table[1]["test_accuracy_high"]) == pytest.approx(0.7 + HALF_01)
    assert table[1]["test_loss_n"] == "3"
    markdown = (out / "report.md").read_text()
    assert "| group | test_accuracy | test_loss |" in markdown
    assert (
        "| algorithm.client_lr=0.1 | 0.7 ± 0.1 [0.4516, 0.9484] (3) | 2 ± 1 [-0.4841, 4.484] (3) |"
        in markdown
    )

    read = [p for p in opened if Path(p).is_relative_to(tmp_path)]
    assert any(p.endswith("summary.json") for p in read)
    assert not [p for p in read if p.endswith((".yaml", ".yml", ".pkl", ".pickle"))]


def test_main_defaults_output_to_first_dir(multirun: Path) -> None:
    assert main([str(multirun), "--metric", "test_loss"]) == 0
    assert (multirun / "report_test_loss.png").stat().st_size > 0
    assert (multirun / "report.csv").is_file()


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_main_missing_or_empty_path_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = tmp_path / kind
    if kind == "empty":
        path.mkdir()
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cohort: error: ") and str(path) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_match_group_the_runs_lack_is_skipped_with_one_line(
    multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A preset's report options over part of its sweep: the table still comes."""
    out = tmp_path / "report"
    assert main([str(multirun), "--match", "algorithm=lm", "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("cohort: warning: --match algorithm=lm: no such")
    assert (out / "report.md").is_file() and not (out / "report_match.md").exists()


def test_a_metric_recorded_only_as_text_is_said_to_be_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    write_run(run, ["seed=0"], {"test_accuracy": 0.5})
    lines = (run / "metrics.jsonl").read_text().replace('"test_accuracy": ', '"test_accuracy": "x"')
    (run / "metrics.jsonl").write_text(lines.replace('"x"0', '"x", "y": 0'))
    assert main([str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cohort: error: 'test_accuracy' is recorded, but never as a number")
    assert "numeric metrics: " in err and "train_loss" in err and len(err.splitlines()) == 1


def test_runs_along_another_axis_are_named_with_the_options_that_draw_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sweep of a protocol that counts steps, reported with the defaults (test_accuracy per
    round): the one-line error says what the runs record per step, and how to ask for it."""
    run = tmp_path / "run"
    write_run(run, ["seed=0"], {"test_accuracy": 0.5})
    records = [{"step": s, "alpha": 0.2 + s / 100, "distill_loss": 1.0} for s in (0, 20, 40)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in records))
    assert main([str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "cohort: error: no run records 'test_accuracy' per round; numeric metrics: -; "
        "per step: alpha, distill_loss (--x step --metric alpha)"
    )
    assert main([str(run), "--x", "step", "--metric", "alpha", "--out", str(tmp_path / "o")]) == 0


def test_runs_of_the_covering_protocol_are_named_per_queries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Active covering records along ``queries`` (its Outcome.x): the hint names that axis too."""
    run = tmp_path / "run"
    write_run(run, ["seed=0"], {"test_accuracy": 0.5})
    records = [{"queries": q, "covered": q / 10} for q in (10, 20)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in records))
    assert main([str(run), "--out", str(tmp_path / "out")]) == 2
    assert "per queries: covered (--x queries --metric covered)" in capsys.readouterr().err


def test_a_run_s_own_axis_from_its_summary_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plug-in protocol's axis (its Outcome.x, in summary.json as ``x``) is named like the
    built-in ones: the hint reads the runs' axes, not only a list of the known protocols'."""
    run = tmp_path / "run"
    write_run(run, ["seed=0"], {"test_accuracy": 0.5})
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "x": "epoch"}))
    records = [{"epoch": e, "val_loss": 1 / e} for e in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in records))
    assert main([str(run), "--out", str(tmp_path / "out")]) == 2
    assert "per epoch: val_loss (--x epoch --metric val_loss)" in capsys.readouterr().err
    (run / "summary.json").write_text(json.dumps({**summary, "x": 3}))
    assert main([str(run), "--out", str(tmp_path / "out")]) == 2
    assert "its 'x' is not a string" in capsys.readouterr().err


def test_main_unknown_metric_exits_2(multirun: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(multirun), "--metric", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "test_accuracy" in err
    assert not (multirun / "report.csv").exists()


def test_yaml_and_pickle_only_directory_is_not_a_run(tmp_path: Path, opened: list[str]) -> None:
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "state.pkl").write_bytes(b"\x80\x04N.")
    (tmp_path / "summary.pkl").write_bytes(b"\x80\x04N.")
    opened.clear()
    with pytest.raises(FileNotFoundError, match="no run found"):
        load_runs([tmp_path])
    assert not [p for p in opened if Path(p).is_relative_to(tmp_path)]


def test_plot_curves_skips_absent_keys_and_rounds(tmp_path: Path) -> None:
    history = [
        {"round": 1, "train_loss": 1.0},
        {"round": 2, "train_loss": 0.5, "test_accuracy": 0.4},
        {"round": 3, "train_loss": 0.4, "test_accuracy": None},
    ]
    path = tmp_path / "curves.png"
    plot_curves(history, path, title="run")
    assert path.stat().st_size > 0
    plot_curves([{"round": 1}], tmp_path / "none.png")  # nothing recorded: still a PNG
    assert (tmp_path / "none.png").read_bytes().startswith(b"\x89PNG")


def test_plot_groups_uneven_histories(tmp_path: Path) -> None:
    groups = {
        "a": [[{"round": 1, "x": 1.0}, {"round": 2, "x": 2.0}], [{"round": 1, "x": 3.0}]],
        "b": [[{"round": 1}]],
    }
    path = tmp_path / "sub" / "groups.png"
    plot_groups(groups, "x", path, title="x")
    assert path.read_bytes().startswith(b"\x89PNG")
    many = {f"algorithm=a{i}, algorithm.f=unset": groups["a"] for i in range(12)}
    plot_groups(many, "x", tmp_path / "many.png")  # a legend below the axes: a taller figure
    assert png_height(tmp_path / "many.png") > png_height(path) + 12 * 0.17 * 120 * 0.9


def test_legend_labels_leave_out_keys_a_run_lacks() -> None:
    assert legend_label("algorithm=margin, algorithm.f=unset, seed=1") == "algorithm=margin, seed=1"
    assert legend_label("algorithm.f=unset") == "algorithm.f=unset"  # nothing else: kept whole


def png_height(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[20:24], "big")


def test_derived_metrics_at_rounds_and_rounds_to_target() -> None:
    history = [
        {"round": 1, "test_accuracy": 0.5, "distance_to_optimum": 2.0},
        {"round": 2},
        {"round": 3, "test_accuracy": 0.8, "distance_to_optimum": 0.4},
    ]
    run = Run(Path("."), {}, {}, {}, history, None, 3)
    assert derived_metrics(run, "test_accuracy", [1, 2, 3], 0.7) == {
        "test_accuracy@1": 0.5,
        "test_accuracy@3": 0.8,
        "rounds_to_0.7": 3.0,
    }
    assert derived_metrics(run, "test_accuracy", (), 0.9) == {}  # never reached: no value
    # Distances: lower is better.
    assert derived_metrics(run, "distance_to_optimum", (), 1.0) == {"rounds_to_1": 3.0}
    labels = [{"labels": 10, "test_accuracy": 0.5}, {"labels": 20, "test_accuracy": 0.9}]
    by_labels = Run(Path("."), {}, {}, {}, labels, None, 2)
    assert derived_metrics(by_labels, "test_accuracy", (), 0.85, x="labels") == {
        "labels_to_0.85": 20.0  # an x already plural keeps its name
    }
    crossing = derived_metrics(by_labels, "test_accuracy", (), 0.8, x="labels", interpolate=True)
    assert crossing == {"labels_to_0.8": pytest.approx(17.5)}  # 0.5 + 0.04 / label reaches 0.8
    first = derived_metrics(by_labels, "test_accuracy", (), 0.4, x="labels", interpolate=True)
    assert first == {"labels_to_0.4": 10.0}  # reached at the first point: nothing to interpolate
    gap = [{"labels": 10, "test_accuracy": float("nan")}, {"labels": 20, "test_accuracy": 0.9}]
    after_nan = Run(Path("."), {}, {}, {}, gap, None, 2)
    assert derived_metrics(after_nan, "test_accuracy", (), 0.8, x="labels", interpolate=True) == {
        "labels_to_0.8": 20.0  # no line from a missing value: the first point reaching it
    }
    lower = derived_metrics(run, "distance_to_optimum", (), 1.0, interpolate=True)
    assert lower == {"rounds_to_1": pytest.approx(1 + 2 * 1.0 / 1.6)}  # 2.0 -> 0.4 over 2 rounds
    with_area = derived_metrics(by_labels, "test_accuracy", (), None, x="labels", area=True)
    assert with_area == {"test_accuracy_area": 0.7}  # (0.5 + 0.9) / 2 over [10, 20]


def run_with_curve(name: str, seed: int, losses: list[float]) -> Run:
    history = [{"step": 10 * (i + 1), "validation_loss": v} for i, v in enumerate(losses)]
    overrides = {"algorithm": name, "seed": str(seed)}
    return Run(Path(name), {}, overrides, {}, history, None, None)


def test_steps_to_match_the_baseline_by_hand(tmp_path: Path) -> None:
    # Mean curves: lm 3, 2, 1 (final 1.0); salt (2.5, 1.0, 0.8) and (2.5, 0.9, 0.6): mean at
    # step 20 is 0.95 <= 1.0, so it matches at 20 of the baseline's 30 steps; rkd never does.
    runs = [
        run_with_curve("lm", 0, [3.0, 2.0, 1.0]),
        run_with_curve("lm", 1, [3.0, 2.0, 1.0]),
        run_with_curve("salt", 0, [2.5, 1.0, 0.8]),
        run_with_curve("salt", 1, [2.5, 0.9, 0.6]),
        run_with_curve("rkd", 0, [2.0, 1.5, 1.2]),
    ]
    matches = {
        m.group: m
        for m in steps_to_match(group_runs(runs), "algorithm=lm", "validation_loss", "step")
    }
    assert matches["algorithm=lm"].reached_at == 30 and matches["algorithm=lm"].fraction == 1.0
    assert matches["algorithm=salt"].reached_at == 20
    assert matches["algorithm=salt"].fraction == pytest.approx(2 / 3)
    assert matches["algorithm=salt"].final == Stat(
        0.7, pytest.approx(math.sqrt(0.02)), 2
    )  # 0.6, 0.8
    assert matches["algorithm=rkd"].reached_at is None and matches["algorithm=rkd"].fraction is None
    assert "| algorithm=rkd | 1.2 (1) | never | - |" in format_matches(
        list(matches.values()), "algorithm=lm", "validation_loss", "step"
    )


def test_match_names_a_group_or_the_one_holding_its_parts() -> None:
    groups = {label: [] for label in (
        "algorithm=lm, protocol.top_k=10",
        "algorithm=salt, protocol.top_k=10",
        "algorithm=salt, protocol.top_k=null",
    )}  # fmt: skip
    assert report.matching_group(groups, "algorithm=lm") == "algorithm=lm, protocol.top_k=10"
    assert report.matching_group(groups, "protocol.top_k=null, algorithm=salt") == (
        "algorithm=salt, protocol.top_k=null"  # in any order
    )
    assert report.matching_group(groups, "algorithm=salt") is None  # two groups
    assert report.matching_group(groups, "algorithm=rkd") is None
    exact = "algorithm=salt, protocol.top_k=10"
    assert report.matching_group(groups, exact) == exact


def test_main_reports_step_based_runs_with_match(tmp_path: Path) -> None:
    # Runs whose records have "step", not "round" (the teacher-student protocol's).
    for name, curve in (("lm", [3.0, 2.0, 1.0]), ("salt", [2.5, 0.9, 0.7])):
        run_dir = tmp_path / name
        run_dir.mkdir()
        summary = {"config": {}, "overrides": [f"algorithm={name}"], "final": {}}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        records = [{"step": 10 * (i + 1), "validation_loss": v} for i, v in enumerate(curve)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = [str(tmp_path), "--metric", "validation_loss", "--x", "step", "--match", "algorithm=lm",
            "--at-rounds", "20", "--target", "1.0"]  # fmt: skip
    assert main(argv) == 0
    matched = (tmp_path / "report_match.md").read_text()
    assert "| algorithm=salt | 0.7 (1) | 20 | 0.67 |" in matched
    table = (tmp_path / "report.md").read_text()
    assert "validation_loss@20" in table and "steps_to_1" in table


def test_log_log_slopes_recover_known_rates(tmp_path: Path) -> None:
    """Runs whose final cost is c * n^rate, per algorithm: the fit returns each rate."""
    job = 0
    for algorithm, rate in (("fast", 0.5), ("slow", 2 / 3)):
        for n in (1000, 4000, 16000):
            for seed in (0, 1):
                cost = 3.0 * n**rate * (1.05 if seed else 0.95)  # noise cancels in the fit
                overrides = [f"algorithm={algorithm}", f"protocol.pool_size={n}", f"seed={seed}"]
                write_run(tmp_path / str(job), overrides, {"test_accuracy": 0.5, "cost": cost})
                job += 1
    fits = log_log_slopes(load_runs([tmp_path]), "protocol.pool_size", "cost")
    assert fits.keys() == {"algorithm=fast", "algorithm=slow"}
    assert fits["algorithm=fast"][0] == pytest.approx(0.5)
    assert fits["algorithm=slow"][0] == pytest.approx(2 / 3)
    assert fits["algorithm=fast"][2] == 6


def test_main_scatter_and_panels_by_dataset(multirun: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    lr = "algorithm.client_lr"
    scatter = ["--scatter", "test_loss,test_accuracy", "--slope", f"{lr}:test_loss"]
    code = main([str(multirun), "--out", str(out), "--by", lr, *scatter])
    assert code == 0
    assert (out / "report_scatter_test_loss_test_accuracy.png").stat().st_size > 0
    assert (out / "report_test_accuracy_by_algorithm.client_lr.png").stat().st_size > 0
    assert "slope of log test_loss" in (out / "report_slope.md").read_text()
    assert (out / "report_slope.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        main([str(multirun), "--scatter", "test_loss"])


def test_scatter_leaves_out_groups_without_the_pair(tmp_path: Path) -> None:
    # DP-FedAvg without noise reports no epsilon: its group has no point, the others do.
    for job, (noise, epsilon) in enumerate([(0, None), (1, 3.5)]):
        final = {"test_accuracy": 0.7 if noise else 0.8}
        if epsilon is not None:
            final["epsilon"] = epsilon
        write_run(tmp_path / str(job), [f"algorithm.noise_multiplier={noise}"], final)
    runs = load_runs([tmp_path])
    groups = group_runs(runs)
    with patch.object(report, "plot_scatter") as plot:
        write_scatter(runs, groups, ["epsilon", "test_accuracy"], None, tmp_path)
    (panel,) = plot.call_args.args[0].values()
    assert panel == {"algorithm.noise_multiplier=1": [(3.5, 0.7)]}


def test_mean_band_interpolates_and_holds_finished_runs() -> None:
    early = [{"q": 10, "c": 0.5}, {"q": 20, "c": 1.0}]  # finished at 20
    late = [{"q": 15, "c": 0.5}, {"q": 30, "c": 1.0}]
    grid, mean, _ = mean_band([early, late], "c", "q", hold=True)
    np.testing.assert_allclose(grid, [10, 15, 20, 30])
    # at 10 only `early`; at 15: 0.75 and 0.5; at 20: 1.0 and 0.5 + 0.5 * 5/15; at 30: held 1.0
    np.testing.assert_allclose(mean, [0.5, 0.625, (1.0 + 0.5 + 0.5 / 3) / 2, 1.0])
    _, dropped, _ = mean_band([early, late], "c", "q")
    assert dropped[-1] == 1.0 and dropped[2] == pytest.approx((1.0 + 0.5 + 0.5 / 3) / 2)
