"""Oracle errors, budget and cost accounting; label noise."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ensure_ray

from envs.tabular import Tabular
from sim.protocols.active.oracle import (
    LabelingError,
    Oracle,
    OracleDesk,
    check_query,
    noisy_answers,
)


def test_check_query_refuses_bad_requests():
    revealed = np.zeros(10, bool)
    revealed[[2, 3]] = True
    assert check_query([0, 9], revealed, 5).tolist() == [0, 9]
    with pytest.raises(LabelingError, match="out of range"):
        check_query([0, 10], revealed, 5)
    with pytest.raises(LabelingError, match="out of range"):
        check_query([-1], revealed, 5)
    with pytest.raises(LabelingError, match="asked twice"):
        check_query([4, 4], revealed, 5)
    with pytest.raises(LabelingError, match="already labeled"):
        check_query([1, 3], revealed, 5)
    with pytest.raises(LabelingError, match="only 2 remain"):
        check_query([0, 1, 4], revealed, 2)
    with pytest.raises(LabelingError, match="integer"):
        check_query([0.5], revealed, 5)


def test_noisy_answers_flip_to_another_class_at_the_rate():
    labels = np.random.default_rng(0).integers(0, 5, 20_000)
    answers = noisy_answers(labels, 5, 0.3, np.random.default_rng(1))
    flipped = answers != labels
    assert abs(flipped.mean() - 0.3) < 0.015
    assert answers.min() >= 0 and answers.max() < 5
    assert (noisy_answers(labels, 5, 0.0, np.random.default_rng(1)) == labels).all()


IRIS = Tabular(dataset="iris")


@pytest.fixture(scope="module")
def oracles():
    """Two oracle actors for the module (actors take seconds to start); each desk resets them."""
    ensure_ray()
    return [Oracle.remote(IRIS, 0, i, 0.0) for i in range(2)]


def make_desk(oracles, budget, cost=2.5):
    desk = OracleDesk(oracles, lambda i: Oracle.remote(IRIS, 0, i, 0.0), 105, budget, cost)
    desk.restore({f"oracle/{i}": np.zeros(0, np.int64) for i in range(len(oracles))})
    return desk


def test_desk_answers_truthfully_and_counts(ray_session, oracles):
    truth = IRIS.load_pool().y
    desk = make_desk(oracles, budget=10)
    assert desk.label(np.array([5, 0, 7])).tolist() == truth[[5, 0, 7]].tolist()
    assert desk.label([100, 1]).tolist() == truth[[100, 1]].tolist()
    assert desk.spent == 5 and desk.cost == pytest.approx(12.5)
    assert sorted(i for ids in desk.by_oracle for i in ids) == [0, 1, 5, 7, 100]
    assert all(desk.by_oracle)  # both oracles answered


def test_desk_errors_charge_nothing(ray_session, oracles):
    desk = make_desk(oracles, budget=4)
    desk.label([1, 2])
    for bad in ([3, 105], [3, 3], [2, 3], [3, 4, 5]):
        with pytest.raises(LabelingError):
            desk.label(bad)
        assert desk.spent == 2
    assert len(desk.label([3, 4])) == 2
    with pytest.raises(LabelingError, match="only 0 remain"):
        desk.label([6])


def test_oracle_refuses_directly_too(ray_session, oracles):
    make_desk(oracles, budget=4)  # resets them
    ray_session.get(oracles[0].label.remote(np.array([1])))
    with pytest.raises(LabelingError, match="already labeled"):
        ray_session.get(oracles[0].label.remote(np.array([1])))


def test_desk_state_round_trips_and_restores_the_oracles(ray_session, oracles):
    desk = make_desk(oracles, budget=20)
    desk.label(np.arange(6))
    state = desk.state()
    fresh = make_desk(oracles, budget=20)  # forgets everything
    assert fresh.spent == 0 and len(fresh.label([2])) == 1
    fresh = make_desk(oracles, budget=20)
    fresh.restore(state)
    assert fresh.spent == 6
    with pytest.raises(LabelingError, match="already labeled"):
        fresh.label([2])
    for i, oracle in enumerate(fresh.oracles):  # the actors themselves know what they revealed
        assert ray_session.get(oracle.revealed.remote()).tolist() == desk.by_oracle[i]
