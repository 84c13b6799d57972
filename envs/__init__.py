"""Environments (federated data sets) and model specs, named by ``_target_`` in ``conf/``."""

from envs.fashion_mnist import FashionMNIST
from envs.least_squares import LeastSquares
from envs.models import CNN, MLP, LinearRegression, LogisticRegression
from envs.synthetic import Synthetic

__all__ = [
    "CNN",
    "MLP",
    "FashionMNIST",
    "LeastSquares",
    "LinearRegression",
    "LogisticRegression",
    "Synthetic",
]
