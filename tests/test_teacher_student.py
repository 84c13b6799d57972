"""The teacher-student protocol end to end on tiny models: a 20-step run, 1 and 2 Ray Train
workers agreeing (with a teacher that dies on the way), exact resume after SIGKILL, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from safetensors.numpy import load_file, save_file

import sim
from sim.errors import CohortError, ConfigError
from tests.conftest import ensure_ray, start_cli, wait_for_rounds

TINY_MODELS = [
    "env.vocab_size=512",
    "model.layers=2",
    "model.width=32",
    "model.heads=2",
    "model.context=32",
    "protocol.teacher.layers=1",
    "protocol.teacher.width=16",
    "protocol.teacher.heads=2",
    "protocol.teacher.steps=10",
    "protocol.teacher.batch_size=4",
]
SHORT = [
    "protocol.steps=20",
    "protocol.eval_every=5",
    "protocol.checkpoint_every=5",
    "protocol.batch_size=4",
    "protocol.warmup_steps=2",
    "protocol.eval_windows=16",
    "progress=false",
]


@pytest.fixture(scope="module")
def lm_cache(tmp_path_factory):
    """A tokenizer and teacher cache shared by this module's runs."""
    return tmp_path_factory.mktemp("lm")


def tiny(cache, *extra):
    return ["algorithm=salt", "algorithm.kd_steps=10", f"env.cache_dir={cache}", *TINY_MODELS,
            *SHORT, *extra]  # fmt: skip


def validation_curve(history):
    return [(r["step"], r["validation_loss"]) for r in history]


@pytest.fixture(scope="module")
def baseline(lm_cache, tmp_path_factory):
    """A 20-step run distilling at every step, on one Ray Train worker (it trains and caches the
    teacher)."""
    ensure_ray()
    out = tmp_path_factory.mktemp("run") / "run"
    return sim.run(tiny(lm_cache, "algorithm.kd_steps=null", f"output_dir={out}"))


def test_twenty_steps_end_to_end(baseline, lm_cache):
    result = baseline
    steps = [r["step"] for r in result.history]
    assert steps == [5, 10, 15, 20]
    first, last = result.history[0], result.history[-1]
    assert last["validation_loss"] < first["validation_loss"] < np.log(512) + 0.5
    assert last["tokens"] == 20 * 4 * 32 and all(r["tokens_per_s"] > 0 for r in result.history)
    assert first["teacher_wait_s"] >= 0 and last["validation_bits_per_byte"] > 0
    out = result.output_dir
    assert (out / "checkpoints" / "checkpoint.npz").exists() and (out / "curves.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["algorithm"]["kd_steps"] is None
    teachers = list(lm_cache.glob("lm/*/teachers/*.safetensors"))
    assert len(teachers) == 1  # trained once, cached for the next runs
    assert not list(lm_cache.glob("lm/*/teachers/*.pt"))  # no pickle
    weights = load_file(out / "model.safetensors")  # the student, by its parameters' names
    assert weights["embed.weight"].shape == (512, 32)
    flat = np.concatenate([weights[k].ravel() for k in sorted(weights)])
    assert hashlib.sha256(flat.tobytes()).hexdigest() == summary["params_sha256"]


def kill_the_teacher_once_running(metrics: Path, killed: list[str]) -> None:
    """Kill the run's teacher actor (Ray restarts it) once ``metrics`` has its first record."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
        teachers = [n for n in names if n.startswith("teacher-")]
        if teachers and metrics.exists() and metrics.read_text().count("\n") >= 1:
            ray.kill(ray.get_actor(teachers[0]), no_restart=False)
            killed.append(teachers[0])
            return
        time.sleep(0.01)


@pytest.mark.slow  # about 35 s: in `pytest -m slow` (the suite's 15-minute budget)
def test_two_workers_agree_with_one_even_when_the_teacher_dies(baseline, lm_cache, tmp_path):
    # Two Ray Train workers at the same global batch give the one-worker curve (to float
    # rounding), although the teacher is killed after the first evaluation, while every
    # remaining step still asks it: Ray restarts it from its cached weights and retries.
    killed: list[str] = []
    killer = threading.Thread(
        target=kill_the_teacher_once_running, args=(tmp_path / "two" / "metrics.jsonl", killed)
    )
    killer.start()
    run = ["algorithm.kd_steps=null", "cluster.num_workers=2", f"output_dir={tmp_path / 'two'}"]
    two_workers = sim.run(tiny(lm_cache, *run))
    killer.join()
    assert killed, "the teacher was never seen"
    one, two = validation_curve(baseline.history), validation_curve(two_workers.history)
    assert [s for s, _ in one] == [s for s, _ in two]
    np.testing.assert_allclose([v for _, v in one], [v for _, v in two], rtol=1e-4)


@pytest.mark.slow  # about 75 s: in `pytest -m slow`; test_resume.py kills and resumes in the suite
def test_resume_after_sigkill_gives_the_same_curve(ray_session, lm_cache, tmp_path):
    common = [*tiny(lm_cache), "protocol.steps=40"]
    run_dir = tmp_path / "killed"
    proc = start_cli(*common, f"hydra.run.dir={run_dir}", start_new_session=True)
    logged = wait_for_rounds(proc, run_dir / "metrics.jsonl", 2, timeout=240)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and 2 <= logged < 8, proc.stderr.read()[-2000:]
    resumed = sim.run([*common, "resume=true", f"output_dir={run_dir}"])
    whole = sim.run([*common, f"output_dir={tmp_path / 'whole'}"])
    assert validation_curve(resumed.history) == validation_curve(whole.history)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert validation_curve([json.loads(x) for x in lines]) == validation_curve(whole.history)


@pytest.mark.parametrize(
    "extra,error,needle",
    [
        (["protocol.context=64"], ConfigError, "protocol.context: 64 tokens exceed the model's"),
        (["algorithm.kd_steps=50"], ConfigError, "algorithm.kd_steps: 50 is beyond the run's 20"),
        (["cluster.num_workers=3"], ConfigError, "cluster.num_workers"),
        (["protocol.top_k=600"], ConfigError, "protocol.top_k: 600 exceeds the vocabulary of 512"),
        (["protocol.batch_size=100000"], ConfigError, "protocol.batch_size: 100000 sequences"),
        (
            [
                "protocol.held_out.prompts=300000",
                "protocol.held_out.prompt_length=8",
                "protocol.held_out.new_tokens=8",
            ],
            ConfigError,
            "protocol.held_out.prompts: 300000",
        ),
    ],
)
def test_bad_input(ray_session, lm_cache, tmp_path, extra, error, needle):
    with pytest.raises(error, match=needle):
        sim.run(tiny(lm_cache, *extra, f"output_dir={tmp_path / 'run'}"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_teacher_of_another_vocabulary_is_refused(ray_session, lm_cache, tmp_path):
    weights = tmp_path / "teacher.safetensors"
    save_file({"embed.weight": np.zeros((300, 16), np.float32)}, weights)
    with pytest.raises(ConfigError, match="vocabulary has 300 tokens, the student's corpus 512"):
        sim.run(tiny(lm_cache, f"protocol.teacher.weights={weights}", f"output_dir={tmp_path}/r"))


def test_a_pickled_teacher_is_refused_unread(ray_session, lm_cache, tmp_path):
    """A ``torch.save`` file is a pickle: loading it could run code, so it is never loaded."""
    weights = tmp_path / "teacher.pt"
    torch.save({"embed.weight": torch.zeros(512, 16)}, weights)
    with pytest.raises(ConfigError, match="is not a safetensors file .* never unpickled"):
        sim.run(tiny(lm_cache, f"protocol.teacher.weights={weights}", f"output_dir={tmp_path}/r"))


def test_a_missing_corpus_says_where_it_looked(lm_cache, tmp_path, monkeypatch):
    import envs.text

    monkeypatch.setattr(envs.text, "USER_DATA_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("COHORT_DATA_DIR", raising=False)
    with pytest.raises(CohortError) as info:
        sim.run(tiny(lm_cache, "env.corpora=[python_docs]", f"output_dir={tmp_path / 'run'}"))
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "scripts/get_text_data.sh" in message
    assert "python3.11-doc" in message


def draft_distillation(cache, *extra):
    """A tiny DistillSpec run: the student is the draft, the teacher the target."""
    return ["algorithm=distillspec", f"env.cache_dir={cache}", *TINY_MODELS, *SHORT,
            "algorithm.prompt_length=8", "protocol.held_out.prompt_length=8", *extra]  # fmt: skip


@pytest.mark.slow  # about a minute: in `pytest -m slow`, beside the reproductions
def test_on_policy_distillation_agrees_on_one_and_two_workers(ray_session, lm_cache, tmp_path):
    # Half of every batch is the draft's own generations, regenerated every 5 steps by Ray
    # tasks from rank 0's snapshot and broadcast: 1 and 2 workers give the same curves, and
    # the workers count the generated sequences they trained on (2 per step of 4).
    run = ["algorithm.data=mixed", "algorithm.refresh=5", "protocol.steps=10",
           "protocol.held_out.prompts=4", "protocol.held_out.new_tokens=8",
           "algorithm.gammas=[2]"]  # fmt: skip
    one, two = (
        sim.run(
            draft_distillation(
                lm_cache, *run, f"cluster.num_workers={n}", f"output_dir={tmp_path / str(n)}"
            )
        )  # fmt: skip
        for n in (1, 2)
    )
    for key in ("validation_loss", "alpha", "alpha_greedy"):
        np.testing.assert_allclose(
            [r[key] for r in one.history], [r[key] for r in two.history], rtol=1e-4, err_msg=key
        )
    assert [r["step"] for r in two.history] == [5, 10]
    for result in (one, two):
        assert [r["generated_sequences"] for r in result.history] == [10, 20]
    assert 0 < two.history[-1]["alpha"] <= 1
    for tag in ("t0", "t1"):  # the final measures joined the last record
        assert 1 <= two.final[f"block_efficiency_g2_{tag}"] <= 3
        assert two.final[f"speedup_g2_{tag}"] > 0 and two.final[f"predicted_speedup_g2_{tag}"] > 0


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["algorithm.data=draft", "algorithm.refresh=3"],
         "protocol.checkpoint_every: 5 must be a multiple of algorithm.refresh 3"),
        (["algorithm.data=target", "algorithm.prompt_length=32"],
         "algorithm.prompt_length: a prompt of 32 tokens leaves nothing to generate"),
        (["protocol.held_out.prompts=2", "protocol.held_out.new_tokens=30"],
         "protocol.held_out: a prompt of 8 tokens and 30 new ones exceed the model's context 32"),
        (["algorithm.gammas=[0]"], "algorithm.gammas: each gamma must be >= 1"),
        (["algorithm.decode_temperatures=[-0.5]"], "0 being greedy decoding"),
    ],
)  # fmt: skip
def test_draft_distillation_bad_input(ray_session, lm_cache, tmp_path, extra, needle):
    with pytest.raises(ConfigError, match=needle):
        sim.run(draft_distillation(lm_cache, *extra, f"output_dir={tmp_path / 'run'}"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow  # about 66 s (two rebuilds of the teacher): the default suite's time budget;
# the damaged-cache path itself runs there (tests/test_softsrv.py, data_dirs.discard_damaged)
def test_damaged_caches_are_rebuilt_with_one_warning(
    ray_session, lm_cache, baseline, tmp_path, capsys
):
    """A cached teacher, then a token stream, cut short (a full disk, a copy interrupted): the
    next run says so in one line naming the file, builds it again, and gives the numbers of
    before. (The teachers live in the token cache's folder: rebuilding it drops them too.)"""
    from envs.text import TextCorpus

    corpus = TextCorpus(vocab_size=512, cache_dir=str(lm_cache))
    folder = corpus.folder(corpus.documents())
    train = np.array(np.load(folder / "train.npy"))
    for damaged in ("teachers/*.safetensors", "train.npy"):
        (path,) = folder.glob(damaged)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        capsys.readouterr()
        out = tmp_path / damaged.split("/")[0]
        again = sim.run(tiny(lm_cache, "algorithm.kd_steps=null", f"output_dir={out}"))
        err = capsys.readouterr().err.splitlines()
        (warning,) = [x for x in err if x.startswith("cohort: warning")]
        assert "is damaged" in warning and "building it again" in warning
        assert str(path if "teachers" in damaged else folder) in warning
        assert validation_curve(again.history) == validation_curve(baseline.history)
    np.testing.assert_array_equal(np.load(folder / "train.npy"), train)


def test_given_teacher_weights_are_checked_against_the_teacher_s_shapes(
    ray_session, lm_cache, baseline, tmp_path
):
    """A cached teacher given as ``protocol.teacher.weights`` is taken as it is; the same file
    with one tensor of another shape is refused in one line naming it, before any actor."""
    (cached,) = lm_cache.glob("lm/*/teachers/*.safetensors")
    run = sim.run(tiny(lm_cache, f"protocol.teacher.weights={cached}", "protocol.steps=10",
                       f"output_dir={tmp_path / 'ok'}"))  # fmt: skip
    assert run.history[-1]["step"] == 10
    tensors = load_file(cached)
    name = next(k for k in sorted(tensors) if tensors[k].ndim == 2 and k != "embed.weight")
    tensors[name] = np.zeros((tensors[name].shape[0], tensors[name].shape[1] + 1), np.float32)
    save_file(tensors, tmp_path / "wrong.safetensors")
    with pytest.raises(ConfigError, match=rf"does not fit the teacher .*: {name} is \("):
        sim.run(tiny(lm_cache, f"protocol.teacher.weights={tmp_path / 'wrong.safetensors'}",
                     f"output_dir={tmp_path / 'r'}"))  # fmt: skip
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


@pytest.mark.slow  # about 66 s (SALT_DS scores the stream twice): as the test above
def test_damaged_selection_scores_are_computed_again(ray_session, lm_cache, baseline, tmp_path,
                                                      capfd):  # fmt: skip
    """SALT_DS's cached teacher scores, cut short: one warning line, scored again, the same run.
    (The teacher scores the stream it is handed in the call: its actor's constructor takes no
    object-store arguments, which Ray would log as an error line, ray-project/ray#53727.)"""
    args = ["algorithm=salt_ds", "protocol.steps=10"]
    first = sim.run(tiny(lm_cache, *args, f"output_dir={tmp_path / 'a'}"))
    assert "max_restarts > 0" not in capfd.readouterr().err
    (scores,) = lm_cache.glob("lm/*/teachers/*.scores.*.npy")
    scores.write_bytes(scores.read_bytes()[:100])
    again = sim.run(tiny(lm_cache, *args, f"output_dir={tmp_path / 'b'}"))
    (warning,) = [x for x in capfd.readouterr().err.splitlines() if x.startswith("cohort: warn")]
    assert str(scores) in warning and "building it again" in warning
    assert validation_curve(again.history) == validation_curve(first.history)
    assert not list(scores.parent.glob(".*"))  # no staging file left


def test_distilling_from_the_teacher_s_whole_distribution(ray_session, lm_cache, baseline,
                                                          tmp_path):  # fmt: skip
    """``protocol.top_k=null``: the teacher serves whole distributions and the student's loss is
    the full KL (was: a crash in the distillation loss, after the teacher was trained)."""
    result = sim.run(tiny(lm_cache, "protocol.top_k=null", "protocol.steps=10",
                          f"output_dir={tmp_path / 'run'}"))  # fmt: skip
    assert [r["step"] for r in result.history] == [5, 10]
    assert np.isfinite(result.history[-1]["validation_loss"])
