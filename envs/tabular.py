"""Tabular pools for active learning: scikit-learn's bundled sets and the R packages mlbench and
kernlab (read offline from their Debian packages with ``rdata``).

Each dataset gets a fixed train/test split (``split_seed``, independent of the run's seed) and
features standardised with the pool's mean and standard deviation only; nominal columns are
one-hot encoded, ordinal and binary ones take their level codes, and missing values become the
pool mean (0 after standardising). The datasets are close to members of OpenML-CC18, the suite of
Bahri et al., "Is margin all you need?", arXiv 2210.03822.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim import checks, seeding
from sim.data_dirs import DATA_DIR_VARIABLE, USER_DATA_DIR, candidate_dirs, first_holding
from sim.interfaces.active import PoolData

R_LIBRARY = Path("usr/lib/R/site-library")
GET_DATA = "bash scripts/get_tabular_data.sh"

SKLEARN = {  # name -> file in sklearn/datasets/data (the CSVs behind load_iris etc.)
    "iris": "iris.csv",
    "wine": "wine_data.csv",
    "breast_cancer": "breast_cancer.csv",
    "digits": "digits.csv.gz",
}
R_DATASETS = {  # name -> (R package, data object, target column, columns to drop)
    "letter": ("mlbench", "LetterRecognition", "lettr", ()),
    "satellite": ("mlbench", "Satellite", "classes", ()),
    "shuttle": ("mlbench", "Shuttle", "Class", ()),
    "dna": ("mlbench", "DNA", "Class", ()),
    "vehicle": ("mlbench", "Vehicle", "Class", ()),
    "vowel": ("mlbench", "Vowel", "Class", ()),
    "breast_cancer_wisconsin": ("mlbench", "BreastCancer", "Class", ("Id",)),
    "pima": ("mlbench", "PimaIndiansDiabetes", "diabetes", ()),
    "sonar": ("mlbench", "Sonar", "Class", ()),
    "ionosphere": ("mlbench", "Ionosphere", "Class", ()),
    "glass": ("mlbench", "Glass", "Type", ()),
    "spam": ("kernlab", "spam", "type", ()),
}
DATASETS = (*SKLEARN, *R_DATASETS)
R_PACKAGES = {"mlbench": "r-cran-mlbench", "kernlab": "r-cran-kernlab"}


def r_data_roots(data_dir: str | None) -> list[Path]:
    """Folders that may hold an extracted R library, in the order they are searched."""
    return candidate_dirs(data_dir, ("",), [USER_DATA_DIR, Path("/")])


def find_rda(package: str, name: str, data_dir: str | None) -> Path:
    """``<root>/usr/lib/R/site-library/<package>/data/<name>.rda`` for the first root having it."""
    folder = first_holding(
        [root / R_LIBRARY / package / "data" for root in r_data_roots(data_dir)],
        lambda folder: (folder / f"{name}.rda").is_file(),
        f"{name}.rda of the R package {package} not found",
        f"Get it with `{GET_DATA}` (apt-get download {R_PACKAGES[package]}, then dpkg-deb -x "
        f"into ${DATA_DIR_VARIABLE} or {USER_DATA_DIR}; it does not install R)",
    )
    return folder / f"{name}.rda"


def frame_to_matrix(frame) -> np.ndarray:
    """A pandas DataFrame as float64 features: categories with numeric levels take their values,
    other ordinal or binary categories their level codes, nominal ones are one-hot; everything else
    is numeric; missing values stay NaN."""
    import pandas as pd

    columns: list[np.ndarray] = []
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            raw_codes = column.cat.codes.to_numpy()
            codes = np.where(raw_codes < 0, np.nan, raw_codes.astype(np.float64))
            levels = len(column.cat.categories)
            numeric = pd.to_numeric(pd.Series(column.cat.categories), errors="coerce").to_numpy()
            if not np.isnan(numeric).any():  # levels "1".."10": their values
                values = numeric.astype(np.float64)[raw_codes.clip(0)]
                columns.append(np.where(raw_codes < 0, np.nan, values)[:, None])
            elif column.cat.ordered or levels <= 2:
                columns.append(codes[:, None])
            else:
                one_hot = (codes[:, None] == np.arange(levels)).astype(np.float64)
                one_hot[np.isnan(codes)] = np.nan
                columns.append(one_hot)
        else:
            columns.append(pd.to_numeric(column, errors="coerce").to_numpy(np.float64)[:, None])
    return np.concatenate(columns, axis=1)


def read_r_dataset(name: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Features and integer labels of an mlbench/kernlab dataset."""
    import rdata

    package, obj, target, drop = R_DATASETS[name]
    path = find_rda(package, obj, data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata: "Unknown encoding. Assumed ASCII."
        frame = rdata.conversion.convert(rdata.parser.parse_file(path))[obj]
    labels = frame[target].astype(str).to_numpy()
    features = frame.drop(columns=[target, *drop])
    return frame_to_matrix(features), labels


def read_sklearn_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels from the CSV that scikit-learn bundles, read without importing
    scikit-learn (seconds per process): rows ``features..., label``; the iris, wine and breast
    cancer files start with a ``n_samples,n_features,class names...`` header, digits has none."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{name}: scikit-learn is not installed (pip install scikit-learn)")
    path = Path(spec.origin).parent / "datasets" / "data" / SKLEARN[name]
    skip = 0 if name == "digits" else 1
    table = np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float64)
    return table[:, :-1], table[:, -1].astype(np.int64)


def standardise_split(
    x: np.ndarray, pool: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pool and test features standardised with the pool's statistics; NaN -> 0 (the pool mean);
    constant columns are centred only."""
    mean = np.nanmean(x[pool], axis=0)
    std = np.nanstd(x[pool], axis=0)
    std[~(std > 0)] = 1.0
    mean = np.nan_to_num(mean)
    scaled = [np.nan_to_num((x[part] - mean) / std).astype(np.float32) for part in (pool, test)]
    return scaled[0], scaled[1]


@dataclass
class Tabular:
    """One of :data:`DATASETS` as an active-learning pool with a fixed held-out test set.

    ``test_fraction`` of the examples (drawn with ``split_seed``) form the test set; the rest is
    the pool. ``max_pool``: keep at most that many pool examples (drawn with the same seed).
    """

    dataset: str = "iris"
    data_dir: str | None = None
    test_fraction: float = 0.3
    split_seed: int = 0
    max_pool: int | None = None

    def __post_init__(self) -> None:
        checks.one_of(self, "dataset", DATASETS)
        checks.positive(self, "test_fraction")
        checks.in_interval(self, 0, 1, "test_fraction")
        checks.at_least(self, 1, "max_pool", optional=True)

    def locate(self) -> None:
        """Raise FileNotFoundError (saying how to get it) if the dataset is not on this machine."""
        if self.dataset in R_DATASETS:
            package, obj, _, _ = R_DATASETS[self.dataset]
            find_rda(package, obj, self.data_dir)

    def load_pool(self) -> PoolData:
        if self.dataset in SKLEARN:
            x, raw_labels = read_sklearn_dataset(self.dataset)
        else:
            x, raw_labels = read_r_dataset(self.dataset, self.data_dir)
        classes, y = np.unique(raw_labels, return_inverse=True)
        order = seeding.rng(self.split_seed, "split", self.dataset).permutation(len(y))
        num_test = int(round(self.test_fraction * len(y)))
        test, pool = np.sort(order[:num_test]), order[num_test:]
        pool = np.sort(pool[: self.max_pool] if self.max_pool else pool)
        pool_x, test_x = standardise_split(x, pool, test)
        y = y.astype(np.int64)
        return PoolData(pool_x, y[pool], test_x, y[test], len(classes), self.dataset)
