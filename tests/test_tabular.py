"""Tabular and image pools: every dataset loads offline, split and standardised as documented."""

from __future__ import annotations

import numpy as np
import pytest

from envs import tabular
from envs.fashion_mnist import FashionMNISTPool, find_data_dir
from envs.tabular import DATASETS, R_DATASETS, Tabular

SIZES = {  # examples, classes (mlbench, kernlab and scikit-learn documentation)
    "iris": (150, 3),
    "wine": (178, 3),
    "breast_cancer": (569, 2),
    "digits": (1797, 10),
    "letter": (20000, 26),
    "satellite": (6435, 6),
    "shuttle": (58000, 7),
    "dna": (3186, 3),
    "vehicle": (846, 4),
    "vowel": (990, 11),
    "breast_cancer_wisconsin": (699, 2),
    "pima": (768, 2),
    "sonar": (208, 2),
    "ionosphere": (351, 2),
    "glass": (214, 6),
    "spam": (4601, 2),
}


def r_data_present(name: str) -> bool:
    try:
        Tabular(dataset=name).locate()
    except FileNotFoundError:
        return False
    return True


def test_at_least_twelve_datasets():
    assert len(DATASETS) >= 12 and set(SIZES) == set(DATASETS)


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_loads_with_a_fixed_split_standardised_on_the_pool(name):
    if name in R_DATASETS and not r_data_present(name):
        pytest.skip(f"{name}: R data absent; run bash scripts/get_tabular_data.sh")
    env = Tabular(dataset=name)
    pool = env.load_pool()
    examples, classes = SIZES[name]
    assert len(pool.y) + len(pool.test_y) == examples
    assert len(pool.test_y) == round(0.3 * examples)
    assert pool.num_classes == classes and set(np.unique(pool.y)) <= set(range(classes))
    assert (
        pool.x.dtype == np.float32 and np.isfinite(pool.x).all() and np.isfinite(pool.test_x).all()
    )
    varying = pool.x.std(0) > 0
    np.testing.assert_allclose(pool.x.mean(0), 0, atol=1e-4)
    # missing values become the mean (0), which shrinks a column's std a little
    np.testing.assert_allclose(pool.x.std(0)[varying], 1, atol=0.02)
    again = env.load_pool()  # the split is fixed
    np.testing.assert_array_equal(again.x, pool.x)
    np.testing.assert_array_equal(again.test_y, pool.test_y)
    assert not hasattr(pool.view(), "y")


def test_missing_r_data_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(tabular, "r_data_roots", lambda data_dir: [tmp_path])
    with pytest.raises(FileNotFoundError, match="scripts/get_tabular_data.sh") as error:
        Tabular(dataset="letter").locate()
    assert str(tmp_path) in str(error.value) and "r-cran-mlbench" in str(error.value)


def test_bad_dataset_name():
    with pytest.raises(ValueError, match="dataset: must be one of"):
        Tabular(dataset="nope")


def test_fashion_mnist_pool():
    try:
        find_data_dir(None)
    except FileNotFoundError:
        pytest.skip("dataset-fashion-mnist is not installed")
    pool = FashionMNISTPool(pool_size=2000, test_size=500).load_pool()
    assert pool.x.shape == (2000, 784) and pool.test_x.shape == (500, 784)
    assert pool.num_classes == 10 and len(np.unique(pool.y)) == 10
