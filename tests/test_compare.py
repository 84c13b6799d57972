"""Win/tie/loss comparison: area under the curve by hand, the Wilcoxon verdicts, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim.reporting.callbacks import MultirunReport
from sim.reporting.compare import area_under_curve, compare, signed_rank_sums, tally
from sim.reporting.report import main


def test_area_under_curve_by_hand():
    history = [
        {"round": 1, "labels": 10, "test_accuracy": 0.5},
        {"round": 2, "labels": 20, "test_accuracy": 0.7},
        {"round": 3, "labels": 40, "test_accuracy": 0.7},
    ]
    # (10 * (0.5 + 0.7) / 2 + 20 * 0.7) / 30 = 20 / 30
    assert area_under_curve(history, "test_accuracy", "labels") == pytest.approx(2 / 3)
    assert area_under_curve(history[:1], "test_accuracy", "labels") == 0.5
    assert area_under_curve(history, "missing", "labels") is None
    # up to a budget: the points of labels <= 20 alone, (0.5 + 0.7) / 2
    assert area_under_curve(history, "test_accuracy", "labels", upto=25) == pytest.approx(0.6)
    assert area_under_curve(history, "test_accuracy", "labels", upto=10) == 0.5


def scores_for(differences: dict[str, list[float]]) -> dict:
    """margin scores 0.5 + d against each other method's 0.5, paired by seed."""
    scores = {}
    for other, diffs in differences.items():
        for seed, d in enumerate(diffs):
            scores[("margin", "data", (str(seed),))] = 0.5 + d
            scores[(other, "data", (str(seed),))] = 0.5
    return scores


def test_signed_rank_sums_by_hand():
    # |d| ranks: 0.1 -> 1, 0.2 and -0.2 -> 2.5 each, -0.4 -> 4; the zero is dropped.
    assert signed_rank_sums(np.array([0.1, 0.2, -0.2, 0.0, -0.4])) == (3.5, 6.5)


def test_many_small_losses_and_one_large_win_is_a_loss():
    # 19 pairs where margin is 0.01 worse, one where it is 1.0 better: the mean difference is
    # positive (+0.04), but the signed ranks say loss (W+ = 20 < W- = 190), significantly.
    diffs = [-0.01] * 19 + [1.0]
    assert signed_rank_sums(np.array(diffs)) == (20.0, 190.0)
    (result,) = compare(scores_for({"random": diffs}), "margin")
    assert result.mean_difference > 0 and result.p_value < 0.01
    assert result.verdict == "loss"


def test_wilcoxon_verdicts():
    # Six pairs all of one sign: the exact two-sided p is 2 / 2^6 = 0.03125 < 0.05.
    better = compare(scores_for({"random": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]}), "margin")
    assert better[0].verdict == "win" and better[0].p_value == pytest.approx(0.03125)
    worse = compare(scores_for({"random": [-0.01, -0.02, -0.03, -0.04, -0.05, -0.06]}), "margin")
    assert worse[0].verdict == "loss"
    # Five pairs can never reach 5% (the smallest p is 2 / 32): a tie however large the gap.
    few = compare(scores_for({"random": [0.1, 0.2, 0.3, 0.4, 0.5]}), "margin")
    assert few[0].verdict == "tie" and few[0].p_value == pytest.approx(0.0625)
    mixed = compare(scores_for({"random": [0.01, -0.02, 0.03, -0.04, 0.05, -0.06]}), "margin")
    assert mixed[0].verdict == "tie"
    same = compare(scores_for({"random": [0.0] * 6}), "margin")
    assert same[0].verdict == "tie" and same[0].p_value == 1.0
    assert tally([*better, *worse, *mixed]) == {"random": {"win": 1, "tie": 1, "loss": 1}}


def write_run(path: Path, overrides: list[str], curve: list[float]) -> None:
    path.mkdir(parents=True)
    summary = {"config": {}, "overrides": overrides, "final": {"test_accuracy": curve[-1]}}
    (path / "summary.json").write_text(json.dumps(summary))
    records = [
        {"round": i + 1, "labels": 10 * (i + 1), "test_accuracy": a} for i, a in enumerate(curve)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_report_compare_cli(tmp_path, capsys):
    job = 0
    for dataset in ("iris", "wine"):
        for algorithm, lift in (("margin", 0.1), ("random", 0.0), ("entropy", 0.1)):
            for batch in (10, 20):
                for seed in range(3):
                    overrides = [
                        f"env.dataset={dataset}",
                        f"algorithm={algorithm}",
                        f"protocol.batch_size={batch}",
                        f"seed={seed}",
                    ]
                    curve = [0.5 + lift + 0.01 * seed + 0.001 * batch, 0.6 + lift]
                    write_run(tmp_path / str(job), overrides, curve)
                    job += 1
    code = main(
        [str(tmp_path), "--x", "labels", "--compare", "algorithm=margin", "--by", "env.dataset"]
    )
    assert code == 0
    text = (tmp_path / "report_compare.md").read_text()
    assert "| random | 2 | 0 | 0 |" in text  # 6 pairs per dataset, margin above in each
    assert "| entropy | 0 | 2 | 0 |" in text  # identical curves
    assert (tmp_path / "report_env.dataset_iris.png").stat().st_size > 0
    assert "| random | 2 | 0 | 0 |" in capsys.readouterr().out


def test_report_compare_needs_by(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--compare", "algorithm=margin"])


def test_report_compare_up_to_each_budget(tmp_path):
    """margin ahead early and behind late: a win up to 10 labels, a loss over the whole curve."""
    for seed in range(6):
        write_run(tmp_path / f"m{seed}", ["algorithm=margin", "env.dataset=iris", f"seed={seed}"],
                  [0.8 + 0.01 * seed, 0.6, 0.6])  # fmt: skip
        write_run(tmp_path / f"r{seed}", ["algorithm=random", "env.dataset=iris", f"seed={seed}"],
                  [0.7, 0.9, 0.9])  # fmt: skip
    code = main([str(tmp_path), "--x", "labels", "--compare", "algorithm=margin",
                 "--by", "env.dataset", "--upto", "10,30"])  # fmt: skip
    assert code == 0
    assert "| random | 1 | 0 | 0 |" in (tmp_path / "report_compare_upto_10.md").read_text()
    assert "| random | 0 | 0 | 1 |" in (tmp_path / "report_compare_upto_30.md").read_text()
    assert "| random | 0 | 0 | 1 |" in (tmp_path / "report_compare.md").read_text()
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--upto", "10"])  # needs --compare
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--compare", "algorithm=margin", "--by", "env.dataset",
              "--upto", "0"])  # fmt: skip


def test_interpolate_needs_a_target(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--interpolate"])
    assert "--interpolate needs --target" in capsys.readouterr().err
    with pytest.raises(ValueError, match="interpolate: needs target"):
        MultirunReport(interpolate=True)
