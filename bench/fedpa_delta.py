"""FedPA's delta: the dynamic program against a dense solve as the dimension d grows.

    python bench/fedpa_delta.py

Prints, per d, the time of ``posterior_delta`` (O(n^2 d)) and of the dense
``solve(rho_n I + (1 - rho_n) S, theta - mean)`` (O(d^3)), their ratio, and the fitted exponent
of time against d for the DP (1 = linear).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from algorithms.federated.fedpa import posterior_delta, shrinkage_covariance


def best_time(fn, *args, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn(*args)``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def dense_delta(theta: np.ndarray, samples: np.ndarray, rho: float) -> np.ndarray:
    """The same delta through the d x d shrinkage covariance and a dense solve."""
    return np.linalg.solve(shrinkage_covariance(samples, rho), theta - samples.mean(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--rho", type=float, default=0.01)
    parser.add_argument("--dense-max", type=int, default=3200, help="largest d for the dense solve")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    dims = [100, 200, 400, 800, 1600, 3200, 10_000, 100_000, 1_000_000]
    print(f"n = {args.samples} samples, rho = {args.rho}")
    print(f"{'d':>9}  {'dp_s':>10}  {'dense_s':>10}  {'dense/dp':>9}  max_rel_diff")
    dp_times = []
    for d in dims:
        samples, theta = rng.normal(size=(args.samples, d)), rng.normal(size=d)
        inputs = (theta, samples, args.rho)
        dp_time = best_time(posterior_delta, *inputs, repeats=args.repeats)
        dp_times.append(dp_time)
        if d <= args.dense_max:
            dense_time = best_time(dense_delta, *inputs, repeats=args.repeats)
            exact = dense_delta(*inputs)
            rel = np.abs(posterior_delta(*inputs) - exact).max() / np.abs(exact).max()
            print(
                f"{d:>9}  {dp_time:>10.2e}  {dense_time:>10.2e}  {dense_time / dp_time:>9.1f}  "
                f"{rel:.1e}"
            )
        else:
            gib = d * d * 8 / 2**30
            print(f"{d:>9}  {dp_time:>10.2e}  {'-':>10}  {'-':>9}  (dense: {gib:.0f} GiB matrix)")
    big = [i for i, d in enumerate(dims) if d >= 10_000]
    slope = np.polyfit(np.log([dims[i] for i in big]), np.log([dp_times[i] for i in big]), 1)[0]
    print(f"DP time ~ d^{slope:.2f} for d >= 10^4 (1.00 = linear)")


if __name__ == "__main__":
    main()
