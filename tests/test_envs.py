"""Tests of the environments (Synthetic, Fashion-MNIST), the partitions and the model specs."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import envs.fashion_mnist as fm
from envs.fashion_mnist import FashionMNIST
from envs.partition import (
    dirichlet_partition,
    iid_partition,
    label_histogram,
    shard_partition,
)
from envs.synthetic import Synthetic
from models.cnn import CNN
from models.linear import LogisticRegression
from models.mlp import MLP
from sim.data_dirs import DATA_DIR_VARIABLE
from sim.interfaces.federated import FederatedData

LABELS = np.repeat(np.arange(10), 500)  # a balanced 10-class training set


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def top_class_share(data: FederatedData) -> float:
    """Mean over clients of the share of their examples in their most common label."""
    hist = label_histogram(data.y, data.order, data.offsets, data.num_classes)
    return float((hist.max(axis=1) / hist.sum(axis=1)).mean())


def assert_partition(order: np.ndarray, offsets: np.ndarray, num_examples: int) -> None:
    assert order.dtype == offsets.dtype == np.int64
    assert offsets[0] == 0 and offsets[-1] == num_examples and np.all(np.diff(offsets) >= 0)
    np.testing.assert_array_equal(np.sort(order), np.arange(num_examples))


def write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_tiny_fashion_mnist(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images = np.arange(8 * 28 * 28).reshape(8, 28, 28) % 256
    write_idx(folder / "train-images-idx3-ubyte.gz", fm.IMAGES_MAGIC, images[:6])
    write_idx(folder / "train-labels-idx1-ubyte.gz", fm.LABELS_MAGIC, np.arange(6) % 3)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", fm.IMAGES_MAGIC, images[6:])
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", fm.LABELS_MAGIC, np.array([1, 2]))


# --- Synthetic -------------------------------------------------------------------------------


def test_synthetic_shapes_and_dtypes() -> None:
    data = Synthetic(num_clients=20, dim=12, num_classes=5).load(rng())
    assert data.num_clients == 20 and data.num_classes == 5 and data.input_shape == (12,)
    assert data.x.dtype == data.test_x.dtype == np.float32
    assert data.y.dtype == data.test_y.dtype == np.int64
    assert data.test_x.shape == (len(data.test_y), 12)
    assert_partition(data.order, data.offsets, len(data.y))
    assert data.y.min() >= 0 and data.y.max() < 5 and data.test_y.max() < 5


def test_synthetic_is_determined_by_the_rng() -> None:
    env = Synthetic(num_clients=10)
    first, again, other = env.load(rng(1)), env.load(rng(1)), env.load(rng(2))
    for name in ("x", "y", "order", "offsets", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert len(first.y) != len(other.y) or not np.array_equal(first.x, other.x)


def test_synthetic_sizes_cap_and_test_split() -> None:
    data = Synthetic(num_clients=50, max_samples_per_client=60, test_fraction=0.2).load(rng())
    sizes = data.client_sizes()
    assert sizes.min() >= 40 and sizes.max() <= 48  # int(0.8 * n) for n in [50, 60]
    total = len(data.y) + len(data.test_y)
    assert 50 * 50 <= total <= 60 * 50
    assert len(data.test_y) == pytest.approx(0.2 * total, rel=0.05)


def test_synthetic_keeps_one_training_example_and_allows_no_test_set() -> None:
    tiny = Synthetic(num_clients=7, max_samples_per_client=1).load(rng())
    np.testing.assert_array_equal(tiny.client_sizes(), np.ones(7))
    assert len(tiny.test_y) == 0
    whole = Synthetic(num_clients=7, test_fraction=0.0).load(rng())
    assert len(whole.test_y) == 0 and whole.client_sizes().min() >= 50


def test_synthetic_iid_features_follow_sigma() -> None:
    data = Synthetic(iid=True, num_clients=100, dim=6).load(rng())
    variances = data.x.var(axis=0) / np.arange(1, 7) ** -1.2
    np.testing.assert_allclose(variances, 1.0, atol=0.05)
    np.testing.assert_allclose(data.x.mean(axis=0), 0.0, atol=0.02)


def test_synthetic_non_iid_labels_are_skewed() -> None:
    skewed = top_class_share(Synthetic(num_clients=50).load(rng()))
    iid = top_class_share(Synthetic(num_clients=50, iid=True).load(rng()))
    assert skewed > 0.7 and iid < 0.45 and skewed - iid > 0.3


def test_synthetic_scales_to_large_populations() -> None:
    data = Synthetic(num_clients=20_000, max_samples_per_client=20).load(rng())
    assert data.num_clients == 20_000 and data.client_sizes().max() == 16
    assert_partition(data.order, data.offsets, len(data.y))


# --- Partitions ------------------------------------------------------------------------------


def test_iid_partition_sizes() -> None:
    order, offsets = iid_partition(103, 10, rng())
    assert_partition(order, offsets, 103)
    assert set(np.diff(offsets)) == {10, 11}


def test_dirichlet_partition_assigns_everything_with_min_size() -> None:
    order, offsets = dirichlet_partition(LABELS, 30, 0.3, rng(), min_size=20)
    assert_partition(order, offsets, len(LABELS))
    assert np.diff(offsets).min() >= 20


def test_dirichlet_label_skew_grows_as_alpha_shrinks() -> None:
    def share(alpha: float) -> float:
        order, offsets = dirichlet_partition(LABELS, 10, alpha, rng(), min_size=1)
        hist = label_histogram(LABELS, order, offsets, 10)
        return float((hist.max(axis=1) / hist.sum(axis=1)).mean())

    skewed, uniform = share(0.05), share(100.0)
    assert skewed > 0.6 and uniform < 0.2 and skewed - uniform > 0.4


def test_dirichlet_partition_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError, match="^alpha: "):
        dirichlet_partition(LABELS, 10, 0.0, rng())
    with pytest.raises(ValueError, match="^num_clients: "):
        dirichlet_partition(LABELS[:5], 10, 1.0, rng())
    with pytest.raises(ValueError, match="^min_size: .* in 100 draws"):
        dirichlet_partition(LABELS[::50], 10, 0.01, rng(), min_size=10, max_draws=100)


def test_shard_partition_limits_labels_per_client() -> None:
    order, offsets = shard_partition(LABELS, 30, 2, rng())
    assert_partition(order, offsets, len(LABELS))
    labels_per_client = (label_histogram(LABELS, order, offsets, 10) > 0).sum(axis=1)
    assert labels_per_client.max() <= 4 and labels_per_client.mean() < 2.5
    assert np.ptp(np.diff(offsets)) <= 2
    with pytest.raises(ValueError, match="^shards_per_client: "):
        shard_partition(LABELS[:50], 30, 2, rng())


def test_label_histogram_counts() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    hist = label_histogram(labels, np.array([5, 0, 1, 2, 3, 4]), np.array([0, 2, 2, 6]), 3)
    np.testing.assert_array_equal(hist, [[1, 0, 1], [0, 0, 0], [0, 2, 2]])


# --- Fashion-MNIST ---------------------------------------------------------------------------


def test_read_idx_parses_header_and_checks_magic(tmp_path: Path) -> None:
    images = np.arange(24).reshape(2, 3, 4)
    write_idx(tmp_path / "images.gz", fm.IMAGES_MAGIC, images)
    np.testing.assert_array_equal(fm.read_idx(tmp_path / "images.gz", fm.IMAGES_MAGIC), images)
    with pytest.raises(ValueError, match="magic number 2051"):
        fm.read_idx(tmp_path / "images.gz", fm.LABELS_MAGIC)
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(struct.pack(">II", fm.LABELS_MAGIC, 5) + bytes(3))
    with pytest.raises(ValueError, match="3 data bytes"):
        fm.read_idx(tmp_path / "short.gz", fm.LABELS_MAGIC)


def test_fashion_mnist_loads_idx_files_from_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_fashion_mnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(tmp_path))
    data = FashionMNIST(num_clients=3, partition="iid").load(rng())
    assert data.x.shape == (6, 1, 28, 28) and data.test_x.shape == (2, 1, 28, 28)
    assert data.x.dtype == np.float32 and data.y.dtype == np.int64
    assert abs(data.x.mean()) < 1e-5 and data.x.std() == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_array_equal(data.test_y, [1, 2])
    assert fm.load_arrays(tmp_path / "fashion-mnist")[0] is data.x  # parsed once, then cached


def test_fashion_mnist_images_are_shared_while_held_and_made_again_once_dropped(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "fashion-mnist"
    write_tiny_fashion_mnist(folder)
    first = fm.load_arrays(folder)
    assert fm.load_arrays(folder)[0] is first[0] and fm.load_arrays(folder)[2] is first[2]
    kept = [array.copy() for array in first]
    (folder / "train-images-idx3-ubyte.gz").unlink()  # parsed once: the files are not read again
    del first
    again = fm.load_arrays(folder)  # the float32 images made again from the kept bytes
    assert not any(array.flags.writeable for array in again)
    for made, before in zip(again, kept, strict=True):
        np.testing.assert_array_equal(made, before)
        assert made.dtype == before.dtype


def test_fashion_mnist_missing_files_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_VARIABLE, raising=False)
    monkeypatch.setattr(fm, "SYSTEM_DATA_DIR", tmp_path / "system")
    with pytest.raises(FileNotFoundError) as error:
        FashionMNIST().load(rng())
    message = str(error.value)
    assert f"looked in: {tmp_path / 'system'}." in message
    assert "apt-get install -y dataset-fashion-mnist" in message and "env.data_dir" in message
    with pytest.raises(FileNotFoundError) as error:  # an explicit folder is the only place
        FashionMNIST(data_dir=str(tmp_path / "mine")).load(rng())
    assert f"looked in: {tmp_path / 'mine'}." in str(error.value)


@pytest.mark.skipif(
    not fm.SYSTEM_DATA_DIR.is_dir(),
    reason="Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)",
)
def test_fashion_mnist_real_files() -> None:
    data = FashionMNIST(data_dir=str(fm.SYSTEM_DATA_DIR), num_clients=100).load(rng())
    assert data.x.shape == (60_000, 1, 28, 28) and data.test_x.shape == (10_000, 1, 28, 28)
    assert data.num_clients == 100 and data.client_sizes().min() >= 10
    np.testing.assert_array_equal(np.bincount(data.y), np.full(10, 6000))
    assert abs(float(data.x.mean())) < 1e-3 and float(data.x.std()) == pytest.approx(1, abs=1e-3)
    subset = FashionMNIST(num_clients=10, partition="shards", train_subset=1000).load(rng())
    assert len(subset.y) == 1000 and subset.num_clients == 10


# --- Models ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "input_shape", "num_parameters"),
    [
        (LogisticRegression(), (60,), 610),
        (MLP(), (1, 28, 28), 199_210),  # the "2NN" of McMahan et al. 2017
        (CNN(), (1, 28, 28), 1_663_370),  # their CNN, same count as in the paper
        (
            CNN(channels=[4], hidden=8),
            (3, 9, 7),
            4 * (3 * 25 + 1) + (4 * 4 * 3) * 8 + 8 + 8 * 10 + 10,
        ),
    ],
)
def test_model_output_shapes(spec: object, input_shape: tuple[int, ...], num_parameters: int):
    model = spec.build(input_shape, 10)
    assert model(torch.zeros(4, *input_shape)).shape == (4, 10)
    assert sum(p.numel() for p in model.parameters()) == num_parameters


def test_cnn_needs_an_image_shape() -> None:
    with pytest.raises(ValueError, match="^input_shape: "):
        CNN().build((784,), 10)
    with pytest.raises(ValueError, match="^input_shape: "):
        CNN().build((1, 3, 3), 10)


# --- Validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (Synthetic, {"num_clients": 0}, "num_clients"),
        (Synthetic, {"alpha": -1.0}, "alpha"),
        (Synthetic, {"beta": -0.5}, "beta"),
        (Synthetic, {"dim": 0}, "dim"),
        (Synthetic, {"num_classes": 1}, "num_classes"),
        (Synthetic, {"test_fraction": 1.0}, "test_fraction"),
        (Synthetic, {"max_samples_per_client": 0}, "max_samples_per_client"),
        (FashionMNIST, {"num_clients": 0}, "num_clients"),
        (FashionMNIST, {"partition": "pathological"}, "partition"),
        (FashionMNIST, {"dirichlet_alpha": 0.0}, "dirichlet_alpha"),
        (FashionMNIST, {"shards_per_client": 0}, "shards_per_client"),
        (FashionMNIST, {"train_subset": 0}, "train_subset"),
        (MLP, {"hidden": [200, 0]}, "hidden"),
        (CNN, {"channels": []}, "channels"),
        (CNN, {"hidden": 0}, "hidden"),
    ],
)
def test_invalid_fields_raise(cls: type, kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: .*\(got .*\)$"):
        cls(**kwargs)
