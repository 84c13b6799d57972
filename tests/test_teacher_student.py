"""The teacher-student protocol end to end on tiny models: a 20-step SALT run, 1 and 2 Ray
Train workers agreeing, exact resume after SIGKILL, a teacher that dies, and bad input."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import ray
import torch

import sim
from sim.errors import CohortError, ConfigError
from tests.conftest import run_cli, start_cli, wait_for_rounds

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


def test_twenty_steps_end_to_end(ray_session, lm_cache, tmp_path):
    result = sim.run(tiny(lm_cache, f"output_dir={tmp_path / 'run'}"))
    steps = [r["step"] for r in result.history]
    assert steps == [5, 10, 15, 20]
    first, last = result.history[0], result.history[-1]
    assert last["validation_loss"] < first["validation_loss"] < np.log(512) + 0.5
    assert last["tokens"] == 20 * 4 * 32 and all(r["tokens_per_s"] > 0 for r in result.history)
    assert first["teacher_wait_s"] >= 0 and last["validation_bits_per_byte"] > 0
    out = result.output_dir
    assert (out / "checkpoints" / "checkpoint.npz").exists() and (out / "curves.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["algorithm"]["kd_steps"] == 10
    teachers = list(lm_cache.glob("lm/*/teachers/*.pt"))
    assert len(teachers) == 1  # trained once, cached for the next runs


def test_one_and_two_workers_agree(ray_session, lm_cache, tmp_path):
    runs = {
        w: sim.run(tiny(lm_cache, f"cluster.num_workers={w}", f"output_dir={tmp_path / str(w)}"))
        for w in (1, 2)
    }
    one, two = (validation_curve(runs[w].history) for w in (1, 2))
    assert [s for s, _ in one] == [s for s, _ in two]
    np.testing.assert_allclose([v for _, v in one], [v for _, v in two], rtol=1e-4)


def test_resume_after_sigkill_gives_the_same_curve(ray_session, lm_cache, tmp_path):
    common = [*tiny(lm_cache), "protocol.steps=100"]
    run_dir = tmp_path / "killed"
    proc = start_cli(*common, f"hydra.run.dir={run_dir}", start_new_session=True)
    logged = wait_for_rounds(proc, run_dir / "metrics.jsonl", 2, timeout=240)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and 2 <= logged < 20, proc.stderr.read()[-2000:]
    resumed = run_cli(*common, "resume=true", f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = sim.run([*common, f"output_dir={tmp_path / 'whole'}"])
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert validation_curve([json.loads(x) for x in lines]) == validation_curve(whole.history)


def test_a_teacher_that_dies_is_restarted_and_the_run_goes_on(ray_session, lm_cache, tmp_path):
    common = [*tiny(lm_cache), "protocol.steps=60", "algorithm.kd_steps=null"]
    whole = sim.run([*common, f"output_dir={tmp_path / 'whole'}"])
    killed = []

    def kill_the_teacher() -> None:
        metrics = tmp_path / "killed" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
            teachers = [n for n in names if n.startswith("teacher-")]
            if teachers and metrics.exists() and metrics.read_text().count("\n") >= 2:
                ray.kill(ray.get_actor(teachers[0]), no_restart=False)
                killed.append(teachers[0])
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_teacher)
    killer.start()
    result = sim.run([*common, f"output_dir={tmp_path / 'killed'}"])
    killer.join()
    assert killed, "the teacher was never seen"
    assert validation_curve(result.history) == validation_curve(whole.history)


@pytest.mark.parametrize(
    "extra,error,needle",
    [
        (["protocol.context=64"], ConfigError, "protocol.context: 64 tokens exceed the model's"),
        (["algorithm.kd_steps=50"], ConfigError, "algorithm.kd_steps: 50 is beyond the run's 20"),
        (["cluster.num_workers=3"], ConfigError, "cluster.num_workers"),
    ],
)
def test_bad_input(ray_session, lm_cache, tmp_path, extra, error, needle):
    with pytest.raises(error, match=needle):
        sim.run(tiny(lm_cache, *extra, f"output_dir={tmp_path / 'run'}"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_teacher_of_another_vocabulary_is_refused(ray_session, lm_cache, tmp_path):
    weights = tmp_path / "teacher.pt"
    torch.save({"embed.weight": torch.zeros(300, 16)}, weights)
    with pytest.raises(ConfigError, match="vocabulary has 300 tokens, the student's corpus 512"):
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
