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


def test_sequential_tasks_balance_examples_and_list_clients_in_id_order():
    sizes = np.array([9, 1, 1, 1, 8, 2, 2, 3, 7, 1, 5, 4])
    tasks = split_tasks(np.arange(12), sizes, 5)
    # largest first into the lightest task (ties: lower task): 9 8 7 -> tasks 0 1 2; 5 -> 2 (12);
    # 4 -> 1 (12); 3 -> 0 (12); 2 2 -> 0 1 (14 14); 1 1 -> 2 2 (14); 1 1 -> 0 1 (15 15)
    assert [t.tolist() for t in tasks] == [[0, 3, 5, 7], [4, 6, 9, 11], [1, 2, 8, 10]]
    assert [int(sizes[t].sum()) for t in tasks] == [15, 15, 14]
    assert split_tasks(np.arange(12), sizes, 5)[0].tolist() == tasks[0].tolist()


def test_vectorized_tasks_group_clients_of_similar_size():
    sizes = np.array([9, 1, 1, 1, 8, 2, 2, 3, 7, 1, 5, 4])
    tasks = split_tasks(np.arange(12), sizes, 5, "vectorized")
    assert [t.tolist() for t in tasks] == [[1, 2, 3, 5, 9], [6, 7, 8, 10, 11], [0, 4]]
