"""DP-FedAvg: clipping, the noise split of adaptive clipping, the accounting against
dp-accounting's own computation, FedAvg when no noise is added, and runs that are the same on
1 or 2 workers and when resumed."""

import json
import logging

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

import sim
from algorithms.federated.dp_fedavg import (
    CLIP_KEY,
    DPFedAvg,
    clip_update,
    geometric_clip_update,
    update_noise_multiplier,
)
from sim.errors import ConfigError
from sim.interfaces.federated import CohortSampling, RoundUpdates
from sim.protocols.federated.actors import run_task
from tests.test_fedavg import linear_model, tiny_population


def test_clipping_bounds_every_client_s_update():
    rng = np.random.default_rng(0)
    for scale in (1e-3, 0.5, 3.0, 1e3):
        delta = (scale * rng.normal(size=50)).astype(np.float32)
        clipped, norm = clip_update(delta, 1.0)
        assert norm == pytest.approx(np.linalg.norm(delta.astype(np.float64)))
        assert np.linalg.norm(clipped) <= 1.0 + 1e-6
        if norm <= 1.0:
            assert clipped is delta  # untouched below the clip
        else:
            np.testing.assert_allclose(clipped, delta / norm, rtol=1e-6)


def test_a_task_s_clients_send_clipped_updates():
    algorithm = DPFedAvg(client_lr=5.0, batch_size=1, local_epochs=3, clip=0.01)
    result, metrics = run_task(
        algorithm,
        linear_model(),
        tiny_population(),
        np.zeros(6, np.float32),
        np.array([0, 1]),
        seed=0,
        round_index=1,
        per_client=True,
    )
    norms = np.linalg.norm(result.deltas.astype(np.float64), axis=1)
    assert np.all(norms <= 0.01 * (1 + 1e-6))
    assert all(m["update_norm"] > 0.01 and m["below_clip"] == 0.0 for m in metrics)
    assert result.weight == 2.0  # uniform weights
    np.testing.assert_allclose(result.weighted_sum, result.deltas.sum(0), rtol=1e-6)


def test_adaptive_clipping_by_hand():
    # Andrew et al. 2021, Theorem 1: z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2).
    assert update_noise_multiplier(1.0, 5.0) == pytest.approx((1 - 1 / 100) ** -0.5)
    assert update_noise_multiplier(0.0, 5.0) == 0.0
    with pytest.raises(ValueError, match="clipped_count_stddev"):
        update_noise_multiplier(2.0, 1.0)
    # clip * exp(-lr (b - gamma)): every update under the clip shrinks it.
    assert geometric_clip_update(1.0, 1.0, 0.5, 0.2) == pytest.approx(np.exp(-0.1))
    algorithm = DPFedAvg(noise_multiplier=0.0, adaptive_clip=True, clip=2.0)
    state = algorithm.server_init(np.zeros(3, np.float32))
    round_updates = RoundUpdates(np.array([1.0, 2.0, 3.0]), 4.0, 4, 4.0, {"below_clip": 1.0})
    delta, state = algorithm.server_aggregate(state, round_updates, np.random.default_rng(0))
    np.testing.assert_allclose(delta, [0.25, 0.5, 0.75])  # the sum over the expected cohort
    # b = (sum_i (b_i - 1/2)) / m + 1/2 = (1 - 2) / 4 + 1/2 = 1/4 of the clients under the clip.
    assert float(state.opt_state[CLIP_KEY]) == pytest.approx(2.0 * np.exp(-0.2 * (0.25 - 0.5)))
    # A Poisson round of 6 clients where 4 were expected, all under the clip: kept in [0, 1].
    many = RoundUpdates(np.zeros(3), 6.0, 6, 4.0, {"below_clip": 6.0})
    assert algorithm.noised_fraction_below(many, np.random.default_rng(0)) == 1.0
    assert algorithm.client_settings(state) == {"clip": float(state.opt_state[CLIP_KEY])}


@pytest.mark.parametrize("kind", ["fixed", "poisson"])
def test_epsilon_equals_dp_accounting_s_own_computation(kind):
    z, rounds, delta = 1.1, 37, 1e-5
    sampling = CohortSampling(kind, 1000, 50)
    spent = DPFedAvg(noise_multiplier=z, delta=delta).privacy_spent(rounds, sampling, True)
    logging.getLogger("absl").setLevel(logging.ERROR)
    if kind == "poisson":  # add/remove one client: the sum moves by at most the clip
        gaussian = dp_accounting.GaussianDpEvent(z)
        event = dp_accounting.PoissonSampledDpEvent(50 / 1000, gaussian)
        relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
        expected_pld = pld.PLDAccountant(relation).compose(event, rounds).get_epsilon(delta)
        assert spent["epsilon_pld"] == pytest.approx(expected_pld, rel=1e-12)
    else:  # replace one client: the sum moves by up to 2 clip, so the multiplier is z / 2
        gaussian = dp_accounting.GaussianDpEvent(z / 2)
        event = dp_accounting.SampledWithoutReplacementDpEvent(1000, 50, gaussian)
        relation = dp_accounting.NeighboringRelation.REPLACE_ONE
        assert "epsilon_pld" not in spent
    expected = rdp.RdpAccountant(neighboring_relation=relation).compose(event, rounds)
    assert spent["epsilon"] == pytest.approx(expected.get_epsilon(delta), rel=1e-9)
    assert spent["delta"] == delta
    default = DPFedAvg(noise_multiplier=z).privacy_spent(rounds, sampling, False)
    assert default["delta"] == pytest.approx(1000**-1.1)
    assert DPFedAvg(noise_multiplier=0.0).privacy_spent(rounds, sampling, True) == {}


@pytest.mark.parametrize("kind,sensitivity", [("fixed", 2.0), ("poisson", 1.0)])
def test_one_round_of_the_whole_cohort_is_the_gaussian_mechanism_in_closed_form(kind, sensitivity):
    # q = 1 (every client every round): the Gaussian mechanism, whose RDP at order a is
    # a * sensitivity^2 / (2 sigma^2), with sigma = z * clip and the sum's sensitivity to one
    # client clip (add/remove) or 2 clip (replace one) -- so 2 a / z^2 for a fixed cohort.
    from algorithms.federated.dp_fedavg import _one_round_rdp

    z = 1.3
    orders, step = _one_round_rdp(z, CohortSampling(kind, 20, 20))
    np.testing.assert_allclose(step, np.array(orders) * sensitivity**2 / (2 * z**2), rtol=1e-9)


def test_the_server_adds_the_noise_the_accounting_assumes():
    # Zero updates from a cohort of m: the server's step is noise alone, N(0, (z_delta clip)^2)
    # on the sum over m; the clipped count gets N(0, sigma_b^2).
    m, d, clip, z, sigma_b = 50, 200_000, 0.5, 1.0, 2.0
    algorithm = DPFedAvg(noise_multiplier=z, clip=clip, adaptive_clip=True,
                         clipped_count_stddev=sigma_b)  # fmt: skip
    zeros = RoundUpdates(np.zeros(d), float(m), m, float(m), {"below_clip": m / 2})
    state = algorithm.server_init(np.zeros(d, np.float32))
    delta, _ = algorithm.server_aggregate(state, zeros, np.random.default_rng(0))
    assert np.std(delta * m) == pytest.approx(update_noise_multiplier(z, sigma_b) * clip, rel=0.01)
    fractions = [algorithm.noised_fraction_below(zeros, np.random.default_rng(i))
                 for i in range(4000)]  # fmt: skip
    assert np.std(np.array(fractions) * m) == pytest.approx(sigma_b, rel=0.05)
    assert np.mean(fractions) == pytest.approx(0.5, abs=0.01)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="weighting"):
        DPFedAvg(weighting="examples")
    with pytest.raises(ValueError, match="clip"):
        DPFedAvg(clip=0.0)
    with pytest.raises(ConfigError, match="aggregator=mean only"):
        sim.run(["algorithm=dp_fedavg", "aggregator=median", "progress=false"])
    with pytest.raises(ConfigError, match="clipped_count_stddev"):  # 10 clients: sigma_b = 0.5
        sim.run(["algorithm=dp_fedavg", "algorithm.adaptive_clip=true", "progress=false"])
    with pytest.raises(ConfigError, match="protocol.byzantine_fraction: DPFedAvg bounds"):
        sim.run(["algorithm=dp_fedavg", "protocol.byzantine_fraction=0.1", "progress=false"])
    with pytest.raises(ConfigError, match="protocol=centralized has one client holding"):
        sim.run(["algorithm=dp_fedavg", "protocol=centralized", "progress=false"])


COMMON = ["protocol.clients_per_round=12", "protocol.eval_every=2", "progress=false"]


def test_no_noise_and_no_clipping_is_fedavg_bit_for_bit(ray_session, tmp_path):
    runs = [
        ["algorithm=fedavg", "algorithm.weighting=uniform"],
        ["algorithm=dp_fedavg", "algorithm.noise_multiplier=0", "algorithm.clip=1e30"],
    ]
    fedavg, dp = (
        sim.run([*COMMON, "protocol.rounds=3", *args, f"output_dir={tmp_path / str(i)}"])
        for i, args in enumerate(runs)
    )
    np.testing.assert_array_equal(fedavg.params, dp.params)
    assert [r["test_loss"] for r in fedavg.history[1::2]] == [
        r["test_loss"] for r in dp.history[1::2]
    ]


PRIVATE = [
    *COMMON,
    "algorithm=dp_fedavg",
    "algorithm.adaptive_clip=true",
    "algorithm.clip=0.3",
    "algorithm.clipped_count_stddev=1.0",
    "protocol.cohort_sampling=poisson",
    "protocol.checkpoint_every=2",
]


def test_private_runs_ignore_the_workers_and_resume_bit_for_bit(ray_session, tmp_path):
    strip = lambda h: [{k: v for k, v in r.items() if k != "round_time_s"} for r in h]  # noqa: E731
    full = sim.run(
        [*PRIVATE, "protocol.rounds=6", "cluster.num_workers=2", f"output_dir={tmp_path / 'full'}"]
    )
    assert full.config["cluster"]["num_workers"] == 2
    part = tmp_path / "part"
    sim.run([*PRIVATE, "protocol.rounds=4", "cluster.num_workers=1", f"output_dir={part}"])
    resumed = sim.run(
        [
            *PRIVATE,
            "protocol.rounds=6",
            "cluster.num_workers=1",
            "resume=true",
            f"output_dir={part}",
        ]
    )
    np.testing.assert_array_equal(full.params, resumed.params)
    assert strip(full.history) == strip(resumed.history)
    clips = [r["clip"] for r in full.history]
    assert len(set(clips)) == len(clips)  # the clip adapts every round
    epsilons = [r["epsilon"] for r in full.history]
    assert epsilons == sorted(epsilons) and epsilons[0] > 0
    assert all("epsilon_pld" in r for r in full.history[1::2])  # at the evaluation rounds
    summary = json.loads((part / "summary.json").read_text())
    assert summary["final"]["epsilon"] == epsilons[-1]


def test_poisson_cohorts_draw_each_client_with_the_rate():
    from sim.protocols.federated.protocol import sample_cohort

    sampling = CohortSampling("poisson", 1000, 50)
    sizes = [len(sample_cohort(3, r, sampling)) for r in range(1, 401)]
    assert np.mean(sizes) == pytest.approx(50, rel=0.03) and len(set(sizes)) > 10
    np.testing.assert_array_equal(sample_cohort(3, 7, sampling), sample_cohort(3, 7, sampling))
    fixed = sample_cohort(3, 7, CohortSampling("fixed", 1000, 50))
    assert len(fixed) == 50 and np.all(np.diff(fixed) > 0)
