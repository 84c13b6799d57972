"""Fashion-MNIST split among clients by label skew (Dirichlet or shards) or uniformly.

Xiao, Rasul & Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
Algorithms", arXiv:1708.07747 (2017). The files use the IDX format of LeCun et al.'s MNIST page
(yann.lecun.com/exdb/mnist): a big-endian header ``0, 0, dtype, ndim`` then ``ndim`` uint32 dims.
"""

from __future__ import annotations

import gzip
import math
import struct
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.partition import dirichlet_partition, iid_partition, shard_partition
from sim import checks, seeding
from sim.data_dirs import candidate_dirs, first_holding
from sim.interfaces.active import PoolData
from sim.interfaces.federated import FederatedData

SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
IMAGES_MAGIC = 2051  # 0x0803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x0801: unsigned bytes, 1 dimension
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", IMAGES_MAGIC),
    "train_labels": ("train-labels-idx1-ubyte.gz", LABELS_MAGIC),
    "test_images": ("t10k-images-idx3-ubyte.gz", IMAGES_MAGIC),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", LABELS_MAGIC),
}
INSTALL_HINT = (
    "install it with: apt-get install -y dataset-fashion-mnist "
    "(or put the four IDX .gz files in a folder and set env.data_dir)"
)
NUM_CLASSES = 10
PARTITIONS = ("dirichlet", "shards", "iid")

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class Parsed:
    """A folder's four files as read: uint8 images (n, 28, 28), int64 labels, and the training
    images' pixel mean and std (of pixel / 255); ``standardised``: weak references to the
    float32 images last made from them."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    mean: float
    std: float
    standardised: tuple[weakref.ref, weakref.ref] | None = field(default=None, repr=False)


_CACHE: dict[Path, Parsed] = {}  # by folder


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array in a gzipped IDX file, checking its magic number and size."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    (found,) = struct.unpack_from(">I", data)
    if found != magic:
        raise ValueError(f"{path}: bad IDX magic number {found} (expected {magic})")
    ndim = found & 0xFF
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != math.prod(dims):
        raise ValueError(f"{path}: {values.size} data bytes, the header says {dims}")
    return values.reshape(dims)


def find_data_dir(data_dir: str | None) -> Path:
    """The first folder holding all four IDX files, of ``data_dir``,
    ``$COHORT_DATA_DIR[/fashion-mnist]`` and the system's."""
    folders = candidate_dirs(data_dir, ("fashion-mnist", ""), [SYSTEM_DATA_DIR])
    return first_holding(
        folders,
        lambda folder: all((folder / name).is_file() for name, _ in FILES.values()),
        "Fashion-MNIST not found",
        INSTALL_HINT,
    )


def standardise(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 (n, 28, 28) -> float32 (n, 1, 28, 28): scaled to [0, 1], then standardised."""
    x = images.astype(np.float32)[:, None]
    x *= np.float32(1 / 255)
    x -= np.float32(mean)
    x /= np.float32(std)
    return x


def parse(folder: Path) -> Parsed:
    """Read the four files and the training images' mean and std."""
    raw = {key: read_idx(folder / name, magic) for key, (name, magic) in FILES.items()}
    for split in ("train", "test"):
        if len(raw[f"{split}_images"]) != len(raw[f"{split}_labels"]):
            raise ValueError(f"{folder}: {split} images and labels differ in number")
    mean, std = raw["train_images"].mean() / 255, raw["train_images"].std() / 255
    labels = {key: raw[key].astype(np.int64) for key in ("train_labels", "test_labels")}
    for array in (*raw.values(), *labels.values()):
        array.flags.writeable = False  # shared by every load in this process
    return Parsed(raw["train_images"], labels["train_labels"], raw["test_images"],
                  labels["test_labels"], mean, std)  # fmt: skip


def load_arrays(folder: Path) -> Arrays:
    """``(train_x, train_y, test_x, test_y)`` of ``folder``, the images standardised with the
    training set's mean and std. The files are parsed once per process and their bytes kept
    (64 MB); the float32 images (220 MB) are shared while some caller holds them, and made
    again from the bytes (0.1 s) once none does: a driver that has handed its population to
    Ray's object store keeps no copy of it."""
    key = folder.resolve()
    if key not in _CACHE:
        _CACHE[key] = parse(key)
    parsed = _CACHE[key]
    held = [ref() for ref in parsed.standardised or ()]
    if len(held) == 2 and all(array is not None for array in held):
        train_x, test_x = held
    else:
        train_x = standardise(parsed.train_images, parsed.mean, parsed.std)
        test_x = standardise(parsed.test_images, parsed.mean, parsed.std)
        for array in (train_x, test_x):
            array.flags.writeable = False  # shared by every load while held
        parsed.standardised = (weakref.ref(train_x), weakref.ref(test_x))
    return train_x, parsed.train_labels, test_x, parsed.test_labels


@dataclass
class FashionMNIST:
    """Fashion-MNIST (60,000 training images among clients; the 10,000 t10k images as test set).

    ``partition``: ``"dirichlet"`` (label proportions ~ Dirichlet(``dirichlet_alpha``) per class,
    Hsu et al. 2019), ``"shards"`` (``shards_per_client`` label-sorted shards per client,
    McMahan et al. 2017) or ``"iid"``. ``train_subset``: keep only that many training images,
    drawn at random, for quick runs.
    """

    data_dir: str | None = None
    num_clients: int = 100
    partition: str = "dirichlet"
    dirichlet_alpha: float = 0.5
    shards_per_client: int = 2
    train_subset: int | None = None

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "num_clients", "shards_per_client")
        checks.one_of(self, "partition", PARTITIONS)
        checks.positive(self, "dirichlet_alpha")
        checks.at_least(self, 1, "train_subset", optional=True)

    def split(self, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(order, offsets)`` of the configured partition."""
        if self.partition == "iid":
            return iid_partition(len(labels), self.num_clients, rng)
        if self.partition == "shards":
            return shard_partition(labels, self.num_clients, self.shards_per_client, rng)
        return dirichlet_partition(labels, self.num_clients, self.dirichlet_alpha, rng)

    def load(self, rng: np.random.Generator) -> FederatedData:
        """Read (or reuse) the files, optionally subsample, and partition the training set."""
        x, y, test_x, test_y = load_arrays(find_data_dir(self.data_dir))
        if self.train_subset is not None:
            if self.train_subset > len(y):
                raise ValueError(
                    f"train_subset: exceeds the {len(y)} training images (got {self.train_subset})"
                )
            keep = rng.permutation(len(y))[: self.train_subset]
            x, y = x[keep], y[keep]
        order, offsets = self.split(y, rng)
        return FederatedData(
            x, y, order=order, offsets=offsets, test_x=test_x, test_y=test_y,
            num_classes=NUM_CLASSES,
        )  # fmt: skip


@dataclass
class FashionMNISTPool:
    """Fashion-MNIST as an active-learning pool: ``pool_size`` training images (drawn with
    ``split_seed``; all 60,000 if None), flattened to 784 standardised features; the t10k images
    (the first ``test_size`` if set) are the test set."""

    data_dir: str | None = None
    pool_size: int | None = 10000
    test_size: int | None = None
    split_seed: int = 0

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "pool_size", "test_size", optional=True)

    def locate(self) -> None:
        find_data_dir(self.data_dir)

    def load_pool(self) -> PoolData:
        x, y, test_x, test_y = load_arrays(find_data_dir(self.data_dir))
        if self.pool_size is not None:
            if self.pool_size > len(y):
                raise ValueError(f"pool_size: exceeds the {len(y)} training images")
            keep = np.sort(
                seeding.rng(self.split_seed, "split", "fashion_mnist").permutation(len(y))[
                    : self.pool_size
                ]
            )
            x, y = x[keep], y[keep]
        test = slice(None, self.test_size)
        return PoolData(
            x.reshape(len(x), -1),
            y,
            test_x[test].reshape(len(test_x[test]), -1),
            test_y[test],
            NUM_CLASSES,
            "fashion_mnist",
        )
