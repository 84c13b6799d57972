"""The pre-training protocol: T5's schedule, the held-out tasks' data and scoring, a short run of
SpacTor end to end (records, the switch at tau in the FLOPs, the fine-tuned snapshots), and bad
input refused before anything runs."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import sim
from algorithms.pretraining.spactor import SpacTor
from models.t5 import T5
from sim.errors import ConfigError
from sim.protocols.pretraining.downstream import (
    follows_data,
    span_matches,
    speaker_data,
    split_at,
    task_data,
)
from sim.protocols.pretraining.loop import inverse_sqrt_rate
from sim.training.span_corruption import Vocabulary
from tests.conftest import ensure_ray, start_cli, wait_for_rounds

TINY = [
    "algorithm=spactor",
    "algorithm.tau=4",
    "env.vocab_size=512",
    "model.layers=1",
    "model.decoder_layers=1",
    "model.width=32",
    "model.heads=2",
    "model.context=32",
    "protocol.steps=8",
    "protocol.eval_every=2",
    "protocol.checkpoint_every=4",
    "protocol.batch_size=4",
    "protocol.warmup_steps=2",
    "protocol.eval_windows=8",
    "protocol.downstream.at=[0.5,1.0]",
    "protocol.downstream.steps=2",
    "protocol.downstream.batch_size=4",
    "progress=false",
]


@pytest.fixture(scope="module")
def lm_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lm")


def test_inverse_square_root_schedule_by_hand():
    rates = [inverse_sqrt_rate(step, 1.0, 4) for step in (0, 2, 3, 15, 63)]
    assert rates == [0.25, 0.75, 1.0, 0.5, 0.25]


def test_documents_split_into_train_and_test_passages():
    stream = np.r_[np.arange(1, 31), 0, np.arange(40, 45), 0, np.arange(50, 70), 0]
    documents = split_at(stream, 0)
    assert [len(d) for d in documents] == [30, 5, 20]
    data = task_data(documents, 5, 0.2, None)  # the 5-token document has one passage: left out
    assert data.classes == 2
    np.testing.assert_array_equal(data.train_labels, [0, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(data.test_labels, [0, 1])
    np.testing.assert_array_equal(data.test, [np.arange(26, 31), np.arange(65, 70)])
    assert task_data([*documents, documents[0]], 5, 0.2, 2).classes == 2  # the first 2 kept
    with pytest.raises(ValueError, match="the tasks need 2"):
        task_data(documents, 20, 0.2, None)
    every = task_data(documents, 5, 0.99, None)  # a document keeps one training passage
    np.testing.assert_array_equal(every.train_labels, [0, 1])


def test_follows_pairs_a_first_half_with_its_own_or_another_second_half():
    stream = np.r_[np.arange(1, 41), 0, np.arange(100, 140), 0]
    data = task_data(split_at(stream, 0), 10, 0.25, None)  # 3 train and 1 test passage each
    pairs = follows_data(data, 9, separator=999)  # halves of 4 tokens
    for split in ("train", "test"):
        passages, documents = getattr(data, split), getattr(data, f"{split}_labels")
        inputs, labels = getattr(pairs, split), getattr(pairs, f"{split}_labels")
        assert inputs.shape == (len(passages), 9) and abs(2 * labels.sum() - len(labels)) <= 1
        np.testing.assert_array_equal(inputs[:, :4], passages[:, :4])
        assert (inputs[:, 4] == 999).all()
        for row, label, passage, document in zip(inputs, labels, passages, documents, strict=True):
            if label:
                np.testing.assert_array_equal(row[5:], passage[4:8])
            else:  # another passage's second half, of the same document when it has another
                donors = [p for p, d in zip(passages, documents, strict=True) if d == document]
                donors = donors if len(donors) > 1 else list(passages)
                assert any((row[5:] == p[4:8]).all() for p in donors if (p != passage).any())
    assert np.array_equal(follows_data(data, 9, 999).train, pairs.train)  # drawn the same always
    with pytest.raises(ValueError, match="follows: passages of 10 tokens, inputs of 23"):
        follows_data(data, 23, 999)


def test_speaker_takes_each_plays_most_frequent_roles_first_tokens():
    def play(*speeches):
        body = "\n\n".join(f"{role}.\n{line}" for role, line in speeches)
        return f"A PLAY\n\nACT I.\n\n{body}\n"

    first = play(("ANN", "a b c"), ("BOB", "d e"), ("ANN", "f g h i"), ("BOB", "j k l"),
                 ("CAL", "m n o"), ("BOB", "p q r"), ("CAL", "s t u"), ("ANN", "v w"))  # fmt: skip
    second = play(("DAN", "a a a"), ("EVE", "b b b"), ("DAN", "c c c"), ("EVE", "d d d"))
    words = {w: i for i, w in enumerate("abcdefghijklmnopqrstuvwxyz")}
    encode = lambda text: [words[w] for w in text.split()]  # noqa: E731
    data = speaker_data([first, "SONNETS\n\nI\n\na b c", second], encode, 2, 3, 0.5)
    # ANN and BOB have 2 speeches of 3+ words each, CAL 2 too but speaks later: ANN, BOB kept
    assert data.classes == 4
    np.testing.assert_array_equal(data.train, [[0, 1, 2], [9, 10, 11], [0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(data.test, [[5, 6, 7], [15, 16, 17], [2, 2, 2], [3, 3, 3]])
    np.testing.assert_array_equal(data.train_labels, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="speaker: speeches of at least 3 tokens in the held-out"):
        speaker_data(["SONNETS\n\nI\n\na b c"], encode, 2, 3, 0.5)


def test_span_exact_match_by_hand():
    s0, s1, s2, eos = 100, 101, 102, 0
    targets = np.array([[s0, 5, 6, s1, 7, s2, 8, 9, eos]])
    predicted = np.array([[s0, 5, 6, s1, 7, 3, s2, 8, 9]])  # span 1 has an extra token
    assert span_matches(predicted, targets, 100, eos) == (2, 3)
    edge = np.array([[s0, 5, 6, eos, s1, 7, s2, 8, 9]])  # an eos inside is text (a document
    assert span_matches(edge, targets, 100, eos) == (2, 3)  # edge): span 0 gets it, wrongly
    assert span_matches(targets, targets, 100, eos) == (3, 3)


def test_a_short_spactor_run_end_to_end(lm_cache, tmp_path):
    ensure_ray()
    result = sim.run([*TINY, f"env.cache_dir={lm_cache}", f"output_dir={tmp_path / 'run'}"])
    pretraining, downstream = result.history[:4], result.history[4:]
    assert [r["step"] for r in pretraining] == [2, 4, 6, 8]
    assert [r["step"] for r in downstream] == [4, 8]
    assert all("rtd_loss" in r for r in pretraining[:2])  # steps 0-3: the hybrid (tau = 4)
    assert not any("rtd_loss" in r for r in pretraining[2:])
    assert pretraining[-1]["validation_loss"] < pretraining[0]["validation_loss"]
    # FLOPs: the hybrid's steps cost the generator and the head besides SC's
    objective, spec = SpacTor(tau=4), T5(1, 1, 32, 2, 32)
    sentinels = objective.lengths(32)[3]
    vocab = Vocabulary(512, sentinels)
    per_step = [4 * objective.step_flops(spec, vocab, 32, step, 8) for step in range(8)]
    np.testing.assert_allclose([r["flops"] for r in pretraining], np.cumsum(per_step)[1::2])
    assert per_step[0] > per_step[7]
    for record in downstream:
        for score in ("documents_accuracy", "speaker_accuracy", "follows_accuracy"):
            assert 0 <= record[score] <= 1
        assert 0 <= record["infill_exact_match"] <= 1
        assert 0 < record["infill_loss"] < np.log(600)
    assert result.history[-1]["validation_loss"] == pretraining[-1]["validation_loss"]
    assert (result.output_dir / "checkpoints" / "checkpoint.npz").exists()


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["protocol.inputs_length=64"], "protocol.inputs_length: 64 tokens exceed the model's"),
        (["protocol.downstream.at=[0.35]"], r"protocol.downstream.at: steps \[3\] of 8 are not"),
        (["algorithm.generator_scale=0.01"], "algorithm.generator_scale: 0.01 of width 32"),
        (["model=gpt"], "needs an encoder-decoder"),
        (["protocol.downstream.batch_size=100000"], "protocol.downstream.batch_size: 100000"),
        (["protocol.downstream.at=[]"], r"protocol.downstream.at: must name at least 1.0"),
        (["algorithm.noise_density=0"], r"algorithm.noise_density: must be in \(0, 1\)"),
        (
            ["algorithm.noise_density=0.999999999"],
            "algorithm.noise_density: 0.999999999 keeps so "
            "few tokens that inputs of 32 would need more than 3200 raw tokens",
        ),  # and at once
    ],
)
def test_bad_input_is_refused_before_anything_runs(lm_cache, tmp_path, extra, needle):
    shape = [a for a in TINY if "model=gpt" not in extra or "decoder_layers" not in a]
    with pytest.raises(ConfigError, match=needle):
        sim.run([*shape, *extra, f"env.cache_dir={lm_cache}", f"output_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow  # about 40 s: in `pytest -m slow` (the suite's 15-minute budget)
def test_one_and_two_workers_give_the_same_run(lm_cache, tmp_path):
    # The global batch, its corruption and the generator's uniforms are drawn on the whole batch,
    # so the worker count changes only the float rounding of the all-reduced gradients.
    ensure_ray()
    runs = [
        sim.run(
            [
                *TINY,
                f"cluster.num_workers={n}",
                f"env.cache_dir={lm_cache}",
                f"output_dir={tmp_path / str(n)}",
            ]
        )  # fmt: skip
        for n in (1, 2)
    ]
    curves = [[r["validation_loss"] for r in run.history[:4]] for run in runs]
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-4)


@pytest.mark.slow  # about 60 s: in `pytest -m slow`
def test_resume_after_sigkill_gives_the_same_run(lm_cache, tmp_path):
    ensure_ray()
    common = [*TINY, f"env.cache_dir={lm_cache}", "protocol.steps=40",
              "protocol.downstream.at=[0.1,1.0]"]  # fmt: skip
    run_dir = tmp_path / "killed"
    proc = start_cli(*common, f"hydra.run.dir={run_dir}", start_new_session=True)
    logged = wait_for_rounds(proc, run_dir / "metrics.jsonl", 3, timeout=240)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and 2 <= logged < 20, proc.stderr.read()[-2000:]
    resumed = sim.run([*common, "resume=true", f"output_dir={run_dir}"])
    whole = sim.run([*common, f"output_dir={tmp_path / 'whole'}"])

    def figures(history):
        keys = ("step", "validation_loss", "flops", "documents_accuracy", "infill_loss")
        return [tuple(r.get(k) for k in keys) for r in history]

    assert figures(resumed.history) == figures(whole.history)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert figures([json.loads(x) for x in lines]) == figures(whole.history)
