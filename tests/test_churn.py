"""Churn-aware retraining: targets and churn metrics by hand, and the protocol end to end."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from algorithms.retraining.churn import (
    Anchor,
    Distill,
    Retrain,
    anchor_targets,
    distillation_targets,
)
from sim.errors import CohortError, ConfigError
from sim.protocols.retraining.metrics import churn_metrics
from sim.protocols.retraining.protocol import base_subset

BASE = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
LABELS = np.array([0, 1])  # the base model is right on row 0, wrong on row 1


def test_distillation_target_by_hand():
    np.testing.assert_allclose(
        distillation_targets(BASE, LABELS, 0.25),
        [[0.25 * 0.7 + 0.75, 0.05, 0.025], [0.025, 0.25 * 0.3 + 0.75, 0.15]],
        rtol=1e-6,
    )
    np.testing.assert_array_equal(
        Distill(lam=0.0).targets(BASE, LABELS), Retrain().targets(BASE, LABELS)
    )
    np.testing.assert_allclose(Distill(lam=1.0).targets(BASE, LABELS), BASE)
    assert np.allclose(distillation_targets(BASE, LABELS, 0.4).sum(axis=1), 1)


def test_anchor_target_by_hand():
    targets = anchor_targets(BASE, LABELS, alpha=0.5, eps=0.2)
    np.testing.assert_allclose(targets[0], [0.85, 0.1, 0.05], rtol=1e-6)  # right: mixed
    np.testing.assert_allclose(targets[1], [0.0, 0.2, 0.0])  # wrong: eps * onehot
    np.testing.assert_array_equal(
        Anchor(alpha=0.0, eps=1.0).targets(BASE, LABELS), np.eye(3)[LABELS]
    )


def test_churn_metrics_by_hand():
    truth = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    base = np.array([0, 1, 2, 1, 1, 0, 0, 2])  # wrong on 3, 5, 7
    new = np.array([0, 2, 2, 0, 1, 2, 1, 2])  # wrong on 1, 6, 7
    m = churn_metrics(base, new, truth)
    assert m["churn"] == 4 / 8  # rows 1, 3, 5, 6 differ (row 7: both say 2)
    assert m["good_churn"] == 2 / 8  # rows 3, 5: base wrong, new right
    assert m["bad_churn"] == 2 / 8  # rows 1, 6: base right, new wrong
    assert m["win_loss"] == 1.0
    assert churn_metrics(base, base, truth) == {
        "churn": 0.0, "good_churn": 0.0, "bad_churn": 0.0, "win_loss": None
    }  # fmt: skip
    with pytest.raises(ValueError, match="empty"):
        churn_metrics(base[:0], new[:0], truth[:0])


def test_base_subset_is_seeded_and_sized():
    rows = base_subset(3, 1000, 0.1)
    assert len(rows) == 100 and len(np.unique(rows)) == 100 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(rows, base_subset(3, 1000, 0.1))
    assert len(base_subset(3, 5, 0.01)) == 1


SHORT = ["env.dataset=wine", "learner.epochs=15", "progress=false"]


def run(tmp_path, *overrides, name="run"):
    return sim.run(sim.compose([*SHORT, *overrides, f"output_dir={tmp_path / name}"]))


def test_retraining_end_to_end_and_paired_by_seed(ray_session, tmp_path):
    plain = run(tmp_path, "algorithm=retrain", name="plain")
    zero = run(tmp_path, "algorithm=distill", "algorithm.lam=0", "protocol.block=16", name="zero")
    record = plain.history[-1]
    assert record["train_rows"] == 125 and record["base_rows"] == 12 and record["classes"] == 3
    assert 0 <= record["bad_churn"] <= record["churn"] <= 1
    assert record["churn"] >= record["good_churn"] + record["bad_churn"] - 1e-12
    assert record["test_accuracy"] > 0.8 and record["base_test_accuracy"] > 0.5
    # lam = 0 is plain retraining: the same targets, init and minibatches give the same model,
    # whatever the teacher's block size
    np.testing.assert_array_equal(zero.params, plain.params)
    full = run(tmp_path, "algorithm=distill", "algorithm.lam=1", name="full")
    assert full.history[-1]["churn"] < record["churn"]  # copying the base model: less churn
    with pytest.raises(CohortError, match="already ended"):
        run(tmp_path, "algorithm=retrain", "resume=true", name="plain")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algorithm=distill", "algorithm.lam=1.5"], "algorithm.lam: must be in"),
        (["algorithm=anchor", "algorithm.eps=-1"], "algorithm.eps: must be in"),
        (["algorithm=distill", "protocol.base_fraction=0"], "protocol.base_fraction"),
        (["algorithm=distill", "env=synthetic"], "needs a pool env"),
        (["algorithm=distill", "protocol=active"], "needs a selector"),
    ],
)
def test_bad_retraining_input(ray_session, tmp_path, overrides, message):
    base = [o for o in SHORT if not (o.startswith("env") and any("env=" in x for x in overrides))]
    with pytest.raises((ConfigError, CohortError), match=message):
        sim.run(sim.compose([*base, *overrides, f"output_dir={tmp_path / 'run'}"]))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
