"""Bad input: one clear line naming the field, a non-zero exit, earlier outputs untouched."""

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

import sim
from sim.errors import CohortError, ConfigError
from tests.conftest import one_line, run_cli


def api_error(overrides, tmp_path):
    with pytest.raises((CohortError, ConfigCompositionException)) as info:
        sim.run(["progress=false", f"output_dir={tmp_path / 'run'}", *overrides])
    assert not (tmp_path / "run").exists(), "a rejected config must not write anything"
    return str(info.value)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["protocol.clients_per_round=31"], "clients_per_round: must be <= the population of 30"),
        (["protocol.clients_per_round=0"], "clients_per_round: must be >= 1"),
        (["algorithm.client_lr=-0.1"], "algorithm.client_lr: must be >= 0"),
        (["algorithm.server_optimizer=rmsprop"], "algorithm.server_optimizer"),
        (["env.num_clients=0"], "env.num_clients"),
        (["cluster.mode=cloud"], "cluster.mode"),
        (["model=cnn"], "model: "),  # the CNN needs image-shaped input; Synthetic is a vector
        (["algorithm.server_optimizer=adam", "algorithm.server_momentum=0.9"], "server_momentum"),
        (["cluster.num_cpus=-1"], "cluster.num_cpus: must be >= 1 or null (got -1)"),
        (["cluster.num_cpus=0"], "cluster.num_cpus: must be >= 1 or null (got 0)"),
        (["env.dim=100000000"], "env.dim: 30 clients of 100000000 features need about"),
        (["env.num_clients=100000000"], "GiB of memory, more than the"),
        (["algorithm.client_lr=nan"], "algorithm.client_lr: must be >= 0 (got nan)"),
        (["algorithm.client_lr=inf"], "algorithm.client_lr: must be a finite number (got inf)"),
        (["env.alpha=nan"], "env.alpha: must be >= 0 (got nan)"),
        (
            ["algorithm=margin", "protocol.cost_per_label=nan"],
            "protocol.cost_per_label: must be >= 0",
        ),
        (["algorithm=margin", "learner.lr=inf"], "learner.lr: must be a finite number (got inf)"),
        (
            ["algorithm=cluster_margin", "algorithm.clusters=null"],
            "algorithm.epsilon: set exactly one of epsilon and clusters",
        ),
        (["algorithm=cluster_margin", "algorithm.micro_clusters=100000"], "must be <= 16384"),
        (["algorithm=cluster_margin", "algorithm.exact_limit=100000"], "must be <= 30000"),
        (  # the pool's size is known once the oracle has it: refused before the first round
            [
                "algorithm=cluster_margin",
                "env.dataset=iris",
                "algorithm.exact_limit=10",
                "algorithm.clusters=5000",
            ],
            "algorithm.clusters: must be <= micro_clusters 4096 for a pool of more than",
        ),  # fmt: skip
        (["algorithm=iwes", "algorithm.variant=margin"], "algorithm.variant: must be one of"),
        (["algorithm=iwes", "algorithm.floor=-0.1"], "algorithm.floor: must be in [0, 1]"),
        (["algorithm=iwes"], "learner: algorithm IWeS needs a learner of 2 models"),
        (["algorithm=iwes", "learner=ensemble", "learner.size=0"], "learner.size: must be >= 1"),
        (["cluster.connect_timeout_s=nan"], "cluster.connect_timeout_s: must be a finite number"),
        (["seed=-1"], "seed: must be >= 0 (got -1)"),
    ],
)
def test_impossible_values_name_the_field(overrides, needle, tmp_path):
    assert needle in api_error(overrides, tmp_path)


def test_unknown_key_and_wrong_type_fail_at_composition(tmp_path):
    assert "learning_rate" in api_error(["learning_rate=0.1"], tmp_path)
    assert "rounds" in api_error(["protocol.rounds=many"], tmp_path)
    assert "client_lrr" in api_error(["algorithm.client_lrr=0.1"], tmp_path)
    assert "client_lr" in api_error(["algorithm.client_lr=fast"], tmp_path)


def test_typo_inside_a_group_yaml_names_the_key(tmp_path):
    from omegaconf import OmegaConf

    from sim.runtime.config import build_component

    node = OmegaConf.create({"_target_": "algorithms.federated.fedavg.FedAvg", "clinet_lr": 0.1})
    with pytest.raises(ConfigError, match=r"algorithm\.clinet_lr"):
        build_component("algorithm", node)
    node = OmegaConf.create(
        {"_target_": "algorithms.federated.fedavg.FedAvg", "local_epochs": "two"}
    )
    with pytest.raises(ConfigError, match=r"algorithm\.local_epochs"):
        build_component("algorithm", node)


def test_unknown_group_option_lists_the_valid_ones(tmp_path):
    with pytest.raises(MissingConfigException) as info:
        sim.run(["algorithm=fedsgd", f"output_dir={tmp_path}"])
    assert "fedavg" in str(info.value)


def test_missing_fashion_mnist_says_where_it_looked(tmp_path, monkeypatch):
    import envs.fashion_mnist as fashion_mnist

    monkeypatch.setattr(fashion_mnist, "SYSTEM_DATA_DIR", tmp_path / "nowhere", raising=True)
    monkeypatch.delenv("COHORT_DATA_DIR", raising=False)
    with pytest.raises(CohortError) as info:
        sim.run(
            [
                "env=fashion_mnist",
                f"env.data_dir={tmp_path / 'empty'}",
                f"output_dir={tmp_path / 'run'}",
            ]
        )
    message = str(info.value)
    assert (
        str(tmp_path / "empty") in message and "apt-get install -y dataset-fashion-mnist" in message
    )


def test_resume_without_checkpoint(tmp_path):
    assert "no checkpoint" in api_error(["resume=true"], tmp_path)


def test_existing_run_is_not_clobbered(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"round": 1}\n')
    with pytest.raises(CohortError, match="already holds a run"):
        sim.run(["progress=false", f"output_dir={run_dir}"])
    assert (run_dir / "metrics.jsonl").read_text() == '{"round": 1}\n'


@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ["cluster=remote", "cluster.address=127.0.0.1:9", "cluster.connect_timeout_s=1"],
            "cluster.address: no Ray cluster answers at 127.0.0.1:9",
        ),
        (["model=cnn"], "model: "),  # a bad value on the command line: see test_failures.py
        (["cluster.num_cpus=2", "cluster.num_workers=5"], "cluster.num_workers: 5 workers"),
        # Hydra's composition errors, as one line: a key the job's config lacks (a field the
        # algorithm does not have), an override that does not parse
        (
            ["algorithm=distillspec", "algorithm.selection_quantile=0.5"],
            "Could not override 'algorithm.selection_quantile': Key 'selection_quantile' is not",
        ),
        (["protocol.rounds=[1"], "no viable alternative at input '[1'"),
    ],
)
def test_cli_errors_are_one_line_with_non_zero_exit(args, needle, tmp_path):
    proc = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert needle in one_line(proc)
    assert not (tmp_path / "run").exists()


def test_cli_unknown_option_lists_choices(tmp_path):
    proc = run_cli("env=cifar", f"hydra.run.dir={tmp_path / 'run'}")
    line = one_line(proc)
    assert "Could not find 'env/cifar' (options: " in line
    assert "synthetic" in line and "fashion_mnist" in line
