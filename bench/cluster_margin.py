"""Cluster-Margin at scale: the clustering's time and peak memory, its agreement with exact HAC,
and the per-round selection time.

    python bench/cluster_margin.py [--sizes 10000,100000,1000000] [--agreement 20000]
                                   [--timeout 900] [--sections 1,2,3,4]

Data: a mixture of 1,000 Gaussians in 64 dimensions (centres N(0, 9 I), unit noise; float32),
and Fashion-MNIST's 60,000 training images projected on their first 64 principal components
(``--agreement`` points of each for the agreement table; skipped if Fashion-MNIST is absent).

1. Clustering: every contender runs in its own process, one after the other; time is the
   clustering call's, peak memory the process's peak RSS, with the RSS before the call beside it
   (Python, the libraries and the data). Contenders: Cohort's two-level scheme (k-means cells +
   average linkage over them, the default 4,096 cells and 10 k-means iterations), exact average
   linkage (scipy, what Cohort uses up to ``exact_limit``), and scikit-learn's
   ``AgglomerativeClustering(linkage="average")``, each cut into 1,000 clusters. The exact ones
   run at sizes up to 2 x 10^4 (their n^2 / 2 float64 distances: 1.6 GB at 2 x 10^4, 4 TB at
   10^6).
2. Agreement: adjusted Rand index of the two-level clustering against exact HAC on the same
   ``--agreement`` points, per cut (10, 100, 1,000 clusters, with the exact tree's distance
   threshold epsilon for each), over 3 k-means seeds: the two-level tree cut into the same
   number of clusters, and cut at the same epsilon (with the clusters that gives).
3. Selection: ``ClusterMargin.select`` of k_t = 100,000 from 10^6 points (k_m = 10 k_t: every
   unlabeled point), next to margin's own selection of the same batch.
4. Embeddings: how closely the clusters of each embedding of a 20,000-image Fashion-MNIST pool
   follow its 10 classes (exact HAC cut into 10 and into 1,000 clusters: adjusted Rand index
   against the classes, and purity, the share of points in their cluster's majority class),
   for the penultimate layer of the MLPs of ``experiment=cluster_margin_ablation`` trained on a
   random 2,000 of the pool (128 x 2 for 10 epochs; 256 x 2 for 40), and for the pixels on the
   top 64 principal components of those 2,000 (the labelled ones); with each MLP's test
   accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from algorithms.active.cluster_margin import ClusterMargin, exact_hac, two_level_hac  # noqa: E402
from algorithms.active.margin import Margin  # noqa: E402
from sim.interfaces.active import LearnerOutputs  # noqa: E402

CUT = 1000  # clusters of the timing runs
DIMS = 64


def mixture(n: int, seed: int = 0) -> np.ndarray:
    """``n`` points of the mixture of the module docstring, made in blocks (no float64 copy)."""
    rng = np.random.default_rng(seed)
    centres = (rng.normal(size=(CUT, DIMS)) * 3).astype(np.float32)
    x = np.empty((n, DIMS), np.float32)
    for start in range(0, n, 100_000):
        stop = min(start + 100_000, n)
        x[start:stop] = centres[rng.integers(0, CUT, size=stop - start)]
        x[start:stop] += rng.normal(size=(stop - start, DIMS)).astype(np.float32)
    return x


def fashion_mnist_pca(n: int) -> np.ndarray | None:
    """The first ``n`` Fashion-MNIST training images on their top 64 principal components."""
    from envs.fashion_mnist import find_data_dir, load_arrays

    try:
        x = load_arrays(find_data_dir(None))[0][:n].reshape(n, -1).astype(np.float64)
    except FileNotFoundError:
        return None
    x -= x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return (x @ vt[:DIMS].T).astype(np.float32)


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def child(method: str, n: int) -> None:
    """One clustering in this process; prints a JSON line."""
    x = mixture(n)
    data_gib = peak_gib()
    tick = time.perf_counter()
    if method == "two-level":
        labels = two_level_hac(x, clusters=CUT, micro_clusters=4096, iterations=10)
    elif method == "exact (scipy)":
        labels = exact_hac(x, clusters=CUT)
    else:
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=CUT, linkage="average").fit_predict(x)
    seconds = time.perf_counter() - tick
    print(
        json.dumps(
            {"seconds": seconds, "peak": peak_gib(), "data": data_gib, "found": len(set(labels))}
        )
    )


def clustering_table(sizes: list[int], timeout: float) -> None:
    print(f"\n1. clustering into {CUT} clusters (mixture, {DIMS} dims), one process each")
    head = f"{'points':>9}  {'method':<16} {'seconds':>8} {'peak GiB':>9} {'RSS before':>10}"
    print(f"{head}  clusters")
    for n in sizes:
        methods = ["two-level"] + (["exact (scipy)", "scikit-learn"] if n <= 20_000 else [])
        for method in methods:
            command = [sys.executable, __file__, "--child", method, str(n)]
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=timeout, check=True
                )
                row = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{n:>9}  {method:<16} {row['seconds']:>8.1f} {row['peak']:>9.2f} "
                    f"{row['data']:>10.2f}  {row['found']}",
                    flush=True,
                )
            except subprocess.TimeoutExpired:
                print(f"{n:>9}  {method:<16} did not finish in {timeout:.0f} s", flush=True)


def agreement_table(n: int) -> None:
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import adjusted_rand_score

    print(f"\n2. agreement with exact HAC, {n} points: adjusted Rand index over k-means seeds 0-2")
    print(
        f"{'data':<22} {'clusters':>8} {'epsilon':>8}  {'ARI, cut into clusters':<22} {'mean':>6}"
        f"  {'ARI, cut at epsilon':<22} {'mean':>6}  two-level clusters at epsilon"
    )
    sets = {"mixture": mixture(n, seed=1), "Fashion-MNIST PCA-64": fashion_mnist_pca(n)}
    for name, x in sets.items():
        if x is None:
            print(f"{name:<22} skipped: Fashion-MNIST is not on this machine")
            continue
        tree = linkage(x.astype(np.float64), method="average")
        for clusters in (10, 100, 1000):
            exact = fcluster(tree, clusters, criterion="maxclust")
            # between the last merge kept and the first one not: exact HAC cut there has
            # exactly that many clusters
            epsilon = tree[len(x) - clusters - 1 : len(x) - clusters + 1, 2].mean()
            by_count = [
                adjusted_rand_score(exact, two_level_hac(x, clusters=clusters, seed=s))
                for s in range(3)
            ]
            at_epsilon = [two_level_hac(x, threshold=epsilon, seed=s) for s in range(3)]
            by_distance = [adjusted_rand_score(exact, labels) for labels in at_epsilon]
            found = " ".join(str(labels.max() + 1) for labels in at_epsilon)
            print(
                f"{name:<22} {clusters:>8} {epsilon:>8.2f}  {show(by_count)}  {show(by_distance)}"
                f"  {found}",
                flush=True,
            )


def show(scores: list[float]) -> str:
    """Three scores and their mean, in the agreement table's columns."""
    return f"{' '.join(f'{s:.3f}' for s in scores):<22} {np.mean(scores):>6.3f}"


def selection_table() -> None:
    n, k = 1_000_000, 100_000
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, 10)).astype(np.float32)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    outputs = LearnerOutputs(probabilities, np.zeros((n, 1), np.float32))
    labeled = np.zeros(n, bool)
    labeled[rng.choice(n, 10_000, replace=False)] = True
    state = {"clusters": rng.integers(0, 5000, size=n)}
    unlabeled = np.full(n, -1)
    times = {}
    for name, call in (
        ("margin", lambda r: Margin().select(outputs, labeled, unlabeled, k, r)),
        (
            "cluster-margin",
            lambda r: ClusterMargin(clusters=1).select(outputs, labeled, unlabeled, k, r, state),
        ),
    ):
        best = np.inf
        for repeat in range(3):
            tick = time.perf_counter()
            call(np.random.default_rng(repeat))
            best = min(best, time.perf_counter() - tick)
        times[name] = best
    print(f"\n3. selection of k_t = {k} from {n} points (best of 3; 5,000 clusters)")
    for name, seconds in times.items():
        print(f"  {name:<15} {seconds:.2f} s  ({seconds / times['margin']:.2f}x margin)")


def embedding_table(n: int = 20000, seed_size: int = 2000) -> None:
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import adjusted_rand_score

    from envs.fashion_mnist import FashionMNISTPool
    from models.learner import MLPLearner
    from sim.training.learner import expose

    try:
        pool = FashionMNISTPool(pool_size=n).load_pool()
    except FileNotFoundError:
        print("\n4. embeddings: skipped, Fashion-MNIST is not on this machine")
        return
    rng = np.random.default_rng(0)
    seed_set = rng.choice(n, seed_size, replace=False)
    centred = pool.x - pool.x.mean(axis=0)
    top = np.linalg.svd(centred[seed_set], full_matrices=False)[2][:DIMS]
    embeddings = {"pixels, PCA-64": (centred @ top.T, None)}
    x, y = pool.x[seed_set], pool.y[seed_set]
    for width, epochs in ((128, 10), (256, 40)):
        learner = MLPLearner(width=width, epochs=epochs, batch_size=128)
        model, _ = learner.fit(x, y, pool.num_classes, np.random.default_rng(0), 0)
        test = expose(model, pool.test_x).probabilities.argmax(axis=1) == pool.test_y
        embeddings[f"MLP {width} x 2, {epochs} epochs"] = (
            expose(model, pool.x).embeddings,
            test.mean(),
        )
    print(f"\n4. embeddings of {n} images (MLPs trained on {seed_set.size} of them): clusters vs")
    print(f"{'embedding':<24} {'test acc':>8}  {'ARI@10':>6} {'purity@10':>9}  {'purity@1000':>11}")
    for name, (e, accuracy) in embeddings.items():
        tree = linkage(e.astype(np.float64), method="average")  # one tree, cut twice
        cells = {c: fcluster(tree, c, criterion="maxclust") for c in (10, 1000)}
        purity = {c: majority_share(labels, pool.y) for c, labels in cells.items()}
        ari = adjusted_rand_score(pool.y, cells[10])
        shown = "-" if accuracy is None else f"{accuracy:.3f}"
        print(f"{name:<24} {shown:>8}  {ari:>6.3f} {purity[10]:>9.3f}  {purity[1000]:>11.3f}")


def majority_share(clusters: np.ndarray, classes: np.ndarray) -> float:
    """The share of points whose class is their cluster's most common one (purity)."""
    counts = np.zeros((clusters.max() + 1, classes.max() + 1), np.int64)  # fcluster: ids from 1
    np.add.at(counts, (clusters, classes), 1)
    return float(counts.max(axis=1).sum() / len(classes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,20000,100000,1000000")
    parser.add_argument("--agreement", type=int, default=20000)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--sections", default="1,2,3,4", help="which tables (docstring)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    print(f"load average at the start: {os.getloadavg()[0]:.2f}; cores: {os.cpu_count()}")
    sections = set(args.sections.split(","))
    if "1" in sections:
        clustering_table([int(s) for s in args.sizes.split(",")], args.timeout)
    if "2" in sections:
        agreement_table(args.agreement)
    if "3" in sections:
        selection_table()
    if "4" in sections:
        embedding_table()
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
