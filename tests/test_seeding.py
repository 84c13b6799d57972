import numpy as np
import pytest

from sim import seeding
from sim.protocols.federated.actors import split_tasks


def test_cohort_is_a_pure_function_of_seed_and_round():
    a = seeding.sample_cohort(3, 7, 100, 10)
    b = seeding.sample_cohort(3, 7, 100, 10)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 10 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, seeding.sample_cohort(3, 8, 100, 10))
    assert not np.array_equal(a, seeding.sample_cohort(4, 7, 100, 10))


def test_cohort_size_is_checked():
    with pytest.raises(ValueError):
        seeding.sample_cohort(0, 1, 5, 6)
    with pytest.raises(ValueError):
        seeding.sample_cohort(0, 1, 5, 0)


def test_streams_differ_by_role_and_are_reproducible():
    x = seeding.rng(0, "client", 1, 2).random(4)
    np.testing.assert_array_equal(x, seeding.rng(0, "client", 1, 2).random(4))
    assert not np.array_equal(x, seeding.rng(0, "client", 1, 3).random(4))
    assert not np.array_equal(x, seeding.rng(0, "cohort", 1, 2).random(4))
    assert 0 <= seeding.torch_seed(0, "init") < 2**63


def test_tasks_do_not_depend_on_anything_but_the_cohort():
    tasks = split_tasks(np.arange(12), 5)
    assert [t.tolist() for t in tasks] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
