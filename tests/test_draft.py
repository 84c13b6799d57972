"""A draft for a pretrained target (DistillSpec's recipe, sim.training.draft): the loss covers the
continuation only, each data source's freshness, distillation brings the draft closer to the
target, the same seed gives the same draft, and a transformers model decodes as a target
(CausalLM: KV cache cut back exactly, greedy speculative decoding equals its greedy decoding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from models.gpt import GPT
from sim.training import draft as draft_module
from sim.training.distill import divergence
from sim.training.draft import (
    DraftRecipe,
    continuation_loss,
    distill,
    domain_stream,
    pretrain,
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


def examples(count: int = 12, length: int = 14) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, VOCAB, length).astype(np.int64) for _ in range(count)]


RECIPE = DraftRecipe(pretrain_steps=0, distill_steps=6, batch_size=4, prompt_length=4,
                     new_tokens=6, distill_lr=1e-2, target_pool=8)  # fmt: skip


def test_examples_and_stream_by_hand():
    tokenizer = type("Tok", (), {"encode": staticmethod(lambda text: [ord(c) for c in text])})()
    found = token_examples(tokenizer, ["abc", "de", "fghi"], min_tokens=3)
    assert [ids.tolist() for ids in found] == [[97, 98, 99], [102, 103, 104, 105]]
    assert domain_stream(found, 0).tolist() == [97, 98, 99, 0, 102, 103, 104, 105, 0]


def test_the_loss_covers_the_continuation_only():
    torch.manual_seed(0)
    target, draft = torch.randn(2, 10, VOCAB), torch.randn(2, 10, VOCAB)
    loss = continuation_loss("fkl", target, draft, prompt_length=4)
    # the logits at positions 3..8 predict tokens 4..9 (the continuation); 9 predicts nothing
    want = divergence("fkl", target[:, 3:9], draft[:, 3:9]).mean()
    torch.testing.assert_close(loss, want)
    changed = target.clone()
    changed[:, :3] = torch.randn(2, 3, VOCAB)  # the prompt's own predictions
    changed[:, 9] = torch.randn(2, VOCAB)
    torch.testing.assert_close(continuation_loss("fkl", changed, draft, 4), loss)
    changed[:, 5] = torch.randn(2, VOCAB)
    assert not torch.allclose(continuation_loss("fkl", changed, draft, 4), loss)


@pytest.mark.parametrize(
    ("data", "refresh", "calls"),
    [("fixed", 1, []), ("target", 1, ["target"]), ("draft", 1, ["draft"] * 6),
     ("draft", 3, ["draft"] * 2)],
)  # fmt: skip
def test_each_source_generates_as_fresh_as_asked(monkeypatch, data, refresh, calls):
    target, draft = tiny_llama(), tiny_gpt(1)
    seen = []
    real = draft_module.continue_rows

    def spy(model, rows, recipe, seed):
        seen.append("draft" if model is draft else "target")
        return real(model, rows, recipe, seed)

    monkeypatch.setattr(draft_module, "continue_rows", spy)
    recipe = DraftRecipe(**{**RECIPE.__dict__, "data": data, "refresh": refresh})
    out = distill(draft, target, examples(), recipe, seed=0, log=lambda line: None)
    assert seen == calls
    assert len(out["losses"]) == 6 and all(np.isfinite(out["losses"]))


def test_distillation_brings_the_draft_toward_the_target_and_repeats_bit_for_bit():
    target, rows = tiny_llama(), torch.from_numpy(np.stack([e[:10] for e in examples()]))

    def gap(model):
        with torch.no_grad():
            return float(continuation_loss("fkl", target(rows), model(rows), 4))

    recipe = DraftRecipe(**{**RECIPE.__dict__, "data": "fixed", "distill_steps": 40})
    runs = []
    for _ in range(2):
        draft = tiny_gpt(1)
        before = gap(draft)
        distill(draft, target, examples(), recipe, seed=3, log=lambda line: None)
        runs.append(torch.cat([p.detach().ravel() for p in draft.parameters()]))
    assert gap(draft) < 0.5 * before
    assert torch.equal(runs[0], runs[1])


def test_pretraining_lowers_the_next_token_loss():
    stream = np.tile(np.arange(VOCAB, dtype=np.int64), 20)  # a predictable stream
    draft = tiny_gpt(2)
    recipe = DraftRecipe(pretrain_steps=80, batch_size=4, context=16, lr=1e-2)
    losses = pretrain(draft, stream, recipe, seed=0, log=lambda line: None)
    assert losses[-1] < 0.5 * losses[0]


def test_recipe_refuses_bad_values():
    with pytest.raises(ValueError, match="data"):
        DraftRecipe(data="corpus")
    with pytest.raises(ValueError, match="divergence"):
        DraftRecipe(divergence="hellinger")
    with pytest.raises(ValueError, match="refresh"):
        DraftRecipe(refresh=0)


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
        (["algorithm.data=mixed"], "algorithm.data: protocol=draft_distillation takes fixed"),
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


def test_a_short_run_on_smollm2_end_to_end(tmp_path):
    """A distilled run, then an undistilled one that reads the first's cached pretrained draft:
    both start from the same draft (the same acceptance rate at step 0, to the bit)."""
    import sim
    from tests.conftest import ensure_ray

    ensure_ray()
    cache = f"protocol.cache_dir={tmp_path / 'cache'}"
    run = sim.run([*TINY, cache, f"output_dir={tmp_path / 'run'}"])
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
    undistilled = sim.run([*TINY, cache, "algorithm.divergence=none",
                           f"output_dir={tmp_path / 'none'}"])  # fmt: skip
    assert [r["step"] for r in undistilled.history] == [0]
    assert undistilled.history[0]["alpha"] == history[0]["alpha"]  # the same starting draft
    assert cached.stat().st_mtime_ns == written  # read, not trained again
    assert not np.array_equal(undistilled.params, run.params)
