"""A draft for a pretrained target (DistillSpec's recipe, sim.training.draft): the loss covers the
continuation only, each data source's freshness, distillation brings the draft closer to the
target, the same seed gives the same draft, and a transformers model decodes as a target
(CausalLM: KV cache cut back exactly, greedy speculative decoding equals its greedy decoding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from algorithms.teacher_student.distillspec import DistillSpec
from models.gpt import GPT
from sim.training import draft as draft_module
from sim.training.distill import divergence
from sim.training.draft import (
    DraftTraining,
    continuation_loss,
    distill,
    domain_stream,
    pretrain,
    pretrained_draft,
    token_examples,
)
from sim.training.speculative import CausalLM, plain_generate, speculative_generate, truncate

VOCAB = 40


def tiny_llama() -> CausalLM:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
    )  # fmt: skip
    return CausalLM(transformers.LlamaForCausalLM(config).eval())


def tiny_gpt(seed: int, vocab: int = VOCAB) -> torch.nn.Module:
    torch.manual_seed(seed)
    return GPT(layers=1, width=16, heads=2, context=32).build(vocab).eval()


def examples(count: int = 30, length: int = 14) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, VOCAB, length).astype(np.int64) for _ in range(count)]


TRAINING = DraftTraining(pretrain_steps=0, steps=6, batch_size=4, new_tokens=6, distill_lr=1e-2,
                         target_pool=8)  # fmt: skip


def method(**fields) -> DistillSpec:
    return DistillSpec(**{"prompt_length": 4, "refresh": 1, "data": "draft", **fields})


def test_examples_and_stream_by_hand():
    tokenizer = type("Tok", (), {"encode": staticmethod(lambda text: [ord(c) for c in text])})()
    found = token_examples(tokenizer, ["abc", "de", "fghi"], min_tokens=3)
    assert [ids.tolist() for ids in found] == [[97, 98, 99], [102, 103, 104, 105]]
    assert domain_stream(found, 0).tolist() == [97, 98, 99, 0, 102, 103, 104, 105, 0]


def test_the_loss_covers_the_continuation_only_with_the_methods_beta_and_temperature():
    torch.manual_seed(0)
    target, draft = torch.randn(2, 10, VOCAB), torch.randn(2, 10, VOCAB)
    loss = continuation_loss(method(divergence="fkl"), target, draft)
    # the logits at positions 3..8 predict tokens 4..9 (the continuation); 9 predicts nothing
    want = divergence("fkl", target[:, 3:9], draft[:, 3:9]).mean()
    torch.testing.assert_close(loss, want)
    changed = target.clone()
    changed[:, :3] = torch.randn(2, 3, VOCAB)  # the prompt's own predictions
    changed[:, 9] = torch.randn(2, VOCAB)
    torch.testing.assert_close(continuation_loss(method(), changed, draft), loss)
    changed[:, 5] = torch.randn(2, VOCAB)
    assert not torch.allclose(continuation_loss(method(), changed, draft), loss)
    jsd = continuation_loss(method(divergence="jsd", beta=0.1, temperature=2.0), target, draft)
    want = divergence("jsd", target[:, 3:9] / 2, draft[:, 3:9] / 2, 0.1).mean()
    torch.testing.assert_close(jsd, want)


@pytest.mark.parametrize(
    ("data", "refresh", "calls"),
    [("fixed", 1, []), ("target", 1, [("target", 8)]), ("draft", 1, [("draft", 4)] * 6),
     ("draft", 4, [("draft", 16), ("draft", 8)])],
)  # fmt: skip
def test_each_source_generates_as_fresh_as_asked(monkeypatch, data, refresh, calls):
    """On-policy data: every ``refresh`` steps the current draft continues the prompts of the
    next ``refresh`` steps at once (each step its own prompts)."""
    target, draft = tiny_llama(), tiny_gpt(1)
    seen, batches = [], []
    real = draft_module.continue_rows

    def spy(model, rows, *args):
        seen.append(("draft" if model is draft else "target", len(rows)))
        return real(model, rows, *args)

    monkeypatch.setattr(draft_module, "continue_rows", spy)
    real_loss = draft_module.continuation_loss
    monkeypatch.setattr(draft_module, "continuation_loss",
                        lambda m, t, d: batches.append(d.shape) or real_loss(m, t, d))  # fmt: skip
    out = distill(draft, target, examples(), TRAINING, method(data=data, refresh=refresh), 0,
                  log=lambda line: None)  # fmt: skip
    assert seen == calls
    assert batches == [(4, 10, VOCAB)] * 6  # 4 rows of 4 prompt + 6 new tokens each step
    assert len(out["losses"]) == 6 and all(np.isfinite(out["losses"]))


def test_each_evaluation_gets_the_mean_loss_since_the_last():
    calls = []
    training = DraftTraining(**{**TRAINING.__dict__, "steps": 5})
    out = distill(tiny_gpt(1), tiny_llama(), examples(), training, method(data="fixed"), 0,
                  log=lambda line: None, every=2,
                  evaluate=lambda step, loss, seconds: calls.append((step, loss)))  # fmt: skip
    losses = out["losses"]
    assert [step for step, _ in calls] == [2, 4, 5]
    assert [loss for _, loss in calls] == pytest.approx(
        [np.mean(losses[0:2]), np.mean(losses[2:4]), losses[4]]
    )


def test_distillation_brings_the_draft_toward_the_target_and_repeats_bit_for_bit():
    target, rows = tiny_llama(), torch.from_numpy(np.stack([e[:10] for e in examples()]))

    def gap(model):
        with torch.no_grad():
            return float(continuation_loss(method(), target(rows), model(rows)))

    training = DraftTraining(**{**TRAINING.__dict__, "steps": 40})
    runs = []
    for _ in range(2):
        draft = tiny_gpt(1)
        before = gap(draft)
        distill(draft, target, examples(), training, method(data="fixed"), 3,
                log=lambda line: None)  # fmt: skip
        runs.append(torch.cat([p.detach().ravel() for p in draft.parameters()]))
    assert gap(draft) < 0.5 * before
    assert torch.equal(runs[0], runs[1])


def test_pretraining_lowers_the_next_token_loss_and_is_cached(tmp_path):
    stream = np.tile(np.arange(VOCAB, dtype=np.int64), 20)  # a predictable stream
    draft = tiny_gpt(2)
    training = DraftTraining(pretrain_steps=80, batch_size=4, context=16, lr=1e-2)
    losses = pretrain(draft, stream, training, seed=0, log=lambda line: None)
    assert losses[-1] < 0.5 * losses[0]
    spec, cpu = GPT(layers=1, width=16, heads=2, context=32), torch.device("cpu")
    short = DraftTraining(pretrain_steps=3, batch_size=2, context=16)
    first = pretrained_draft(spec, VOCAB, stream, short, 0, cpu, str(tmp_path))
    (cached,) = (tmp_path / "models" / "drafts").glob("*.safetensors")
    cached.write_bytes(cached.read_bytes()[:50])  # damaged: trained again, the same weights
    again = pretrained_draft(spec, VOCAB, stream, short, 0, cpu, str(tmp_path))
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True)
    )
    other = pretrained_draft(spec, VOCAB, stream[1:], short, 0, cpu, str(tmp_path))
    assert len(list((tmp_path / "models" / "drafts").glob("*.safetensors"))) == 2  # new stream
    assert not torch.equal(other.embed.weight, first.embed.weight)


def test_bad_input_is_refused_in_one_line():
    target, draft = tiny_llama(), tiny_gpt(1)
    with pytest.raises(ValueError, match="context: the domain's 10 tokens hold no window of 17"):
        pretrain(draft, np.arange(10), DraftTraining(pretrain_steps=1, context=16), 0)
    for bad, needle in ((method(divergence="none"), "'none' is the undistilled draft"),
                        (method(data="mixed"), "algorithm.data: must be one of")):  # fmt: skip
        with pytest.raises(ValueError, match=needle):
            distill(draft, target, examples(), TRAINING, bad, 0)
    with pytest.raises(ValueError, match="every: evaluate after every >= 1 steps"):
        distill(draft, target, examples(), TRAINING, method(), 0, evaluate=print, every=0)
    with pytest.raises(ValueError, match="batch_size: 4 prompts exceed the 3 examples"):
        distill(draft, target, examples(3), TRAINING, method(), 0)
    with pytest.raises(ValueError, match="steps"):
        DraftTraining(steps=-1)


def test_a_transformers_model_decodes_as_a_target():
    target = tiny_llama()
    ids = torch.tensor([[1, 5, 9, 3, 7, 2, 8, 4]])
    with torch.no_grad():
        full = target(ids)
        logits, cache = target.extend(ids[:, :5], None)
        rest, cache = target.extend(ids[:, 5:], cache)
        torch.testing.assert_close(torch.cat([logits, rest], 1), full, atol=1e-5, rtol=1e-5)
        again, _ = target.extend(ids[:, 3:], truncate(cache, 3))  # after a rejection at 3
        torch.testing.assert_close(again, full[:, 3:], atol=1e-5, rtol=1e-5)
    draft = tiny_gpt(1)  # over the target's vocabulary, as a draft must be
    plain, _ = plain_generate(target, [1, 2, 3], 20, 0.0, None)
    for gamma in (1, 4):
        fast, _ = speculative_generate(target, draft, [1, 2, 3], 20, gamma, 0.0, None)
        assert fast == plain
    with pytest.raises(ValueError, match="must use the target's tokenizer"):
        speculative_generate(target, tiny_gpt(1, VOCAB + 1), [1, 2], 5, 2, 0.0, None)


TINY = [
    "algorithm=draft_distillspec",
    "algorithm.data=draft",
    "algorithm.prompt_length=8",
    "algorithm.gammas=[1,3]",
    "learner.layers=1",
    "learner.width=32",
    "learner.heads=2",
    "learner.context=32",
    "protocol.pretrain_steps=3",
    "protocol.steps=4",
    "protocol.eval_every=2",
    "protocol.batch_size=2",
    "protocol.context=16",
    "protocol.new_tokens=8",
    "protocol.train_examples=40",
    "protocol.held_out.prompts=2",
    "protocol.held_out.prompt_length=8",
    "protocol.held_out.new_tokens=8",
    "progress=false",
]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["algorithm.data=mixed"], "algorithm.data: protocol=draft_distillation takes one of"),
        (["protocol.held_out.new_tokens=30"],
         "protocol.held_out.prompt_length \\+ new_tokens: 38 tokens exceed the draft's context 32"),
        (["protocol.new_tokens=30"], "algorithm.prompt_length \\+ protocol.new_tokens: 38"),
        (["algorithm=salt", "protocol=draft_distillation"], "needs DistillSpec"),
        (["protocol.held_out.prompts=0"], "held_out.prompts: must be >= 1"),
    ],
)  # fmt: skip
def test_the_protocol_refuses_bad_input_before_anything_runs(tmp_path, extra, needle):
    import sim
    from sim.errors import ConfigError

    other = "algorithm=salt" in extra  # SALT has none of DistillSpec's fields
    shape = [a for a in TINY if not (other and a.startswith("algorithm"))]
    with pytest.raises(ConfigError, match=needle):
        sim.run([*shape, *extra, f"output_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow  # a real 135M-parameter model end to end, twice (~50 s): pytest -m slow
def test_a_short_run_on_smollm2_end_to_end(tmp_path, capsys):
    """A distilled run, then an undistilled one that reads the first's cached pretrained draft:
    both start from the same draft (the same acceptance rate at step 0, to the bit). The Ray
    task's progress lines reach the run's console."""
    import sim
    from tests.conftest import ensure_ray

    ensure_ray()
    cache = f"protocol.cache_dir={tmp_path / 'cache'}"
    shown = "progress=true"  # the task's lines: on the run's console
    run = sim.run([*TINY, cache, shown, f"output_dir={tmp_path / 'run'}"])
    history = run.history
    assert [r["step"] for r in history] == [0, 2, 4]
    assert all(0 <= r["alpha"] <= 1 and 0 <= r["alpha_greedy"] <= 1 for r in history)
    assert all(np.isfinite(r["distill_loss"]) for r in history[1:])
    final = history[-1]
    for tag in ("t0", "t1"):
        for gamma in (1, 3):
            assert 1 <= final[f"block_efficiency_g{gamma}_{tag}"] <= gamma + 1
            assert final[f"speedup_g{gamma}_{tag}"] > 0
    assert (run.output_dir / "model.safetensors").is_file()
    (cached,) = (tmp_path / "cache" / "models" / "drafts").glob("*.safetensors")
    written = cached.stat().st_mtime_ns
    undistilled = sim.run([*TINY, cache, "algorithm.divergence=none", shown,
                           f"output_dir={tmp_path / 'none'}"])  # fmt: skip
    assert [r["step"] for r in undistilled.history] == [0]
    assert undistilled.history[0]["alpha"] == history[0]["alpha"]  # the same starting draft
    assert cached.stat().st_mtime_ns == written  # read, not trained again
    assert not np.array_equal(undistilled.params, run.params)
    lines = capsys.readouterr().out.splitlines()
    for start in ("[draft pretrain 1/", "[draft distill 4/4]", "[draft pretrain] the cached draft",
                  "[measure] speculative decoding"):  # fmt: skip
        assert any(line.startswith(start) for line in lines), lines


def test_every_job_of_the_preset_passes_the_protocols_checks():
    """experiment=distillspec_smollm2 at its own sizes: every job composes, builds and is
    prepared (the checks that run before Ray)."""
    from sim import compose
    from sim.interfaces.protocol import Setup
    from sim.runtime.config import COMPONENTS, build_component
    from tests.test_configs import sweep_overrides

    jobs = sweep_overrides("distillspec_smollm2")
    assert len(jobs) == 18  # 6 arms x 3 seeds; the checks do not read the seed: one per arm
    for overrides in [job for job in jobs if "seed=0" in job]:
        cfg = compose(["experiment=distillspec_smollm2", *overrides])
        parts = {g: build_component(g, cfg[g]) for g in COMPONENTS if cfg.get(g) is not None}
        job = build_component("protocol", cfg.protocol).prepare(Setup(parts, cfg.seed))
        assert job.distill_steps == (0 if cfg.algorithm.divergence == "none" else 100)
