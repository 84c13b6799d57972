"""Selection time of each selector as the pool grows (10^4, 10^5, 10^6 points).

    python bench/selection_time.py [--sizes 10000,100000,1000000] [--batch 100]

The learner's outputs are synthetic (softmax of Gaussian logits over ``--classes`` classes and
rectified Gaussian ``--width``-dimensional embeddings), ``--labeled`` points of the pool labeled
(k-center greedy measures every pool point against every labeled one). Prints per pool size the
best-of-``--repeats`` time of each selector's ``select`` and its ratio to margin's time in the
same run; BADGE and k-center greedy are O(n * batch * (classes + width)), the others O(n).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from algorithms.active.badge import Badge
from algorithms.active.coreset import Coreset
from algorithms.active.entropy import Entropy
from algorithms.active.least_confidence import LeastConfidence
from algorithms.active.margin import Margin
from algorithms.active.random_selection import RandomSelection
from sim.interfaces.active import LearnerOutputs

SELECTORS = {
    "margin": Margin(),
    "random": RandomSelection(),
    "least_confidence": LeastConfidence(),
    "entropy": Entropy(),
    "coreset": Coreset(),
    "badge": Badge(),
}


def pool(size: int, classes: int, width: int, rng: np.random.Generator) -> LearnerOutputs:
    logits = rng.normal(size=(size, classes)).astype(np.float32)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    embeddings = np.maximum(rng.normal(size=(size, width)), 0).astype(np.float32)
    return LearnerOutputs(probabilities, embeddings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--labeled", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"batch {args.batch}, {args.labeled} labeled, {args.classes} classes, "
        f"embeddings of width {args.width}"
    )
    print(f"{'pool':>9} {'selector':>17} {'seconds':>9} {'x margin':>9}")
    for size in map(int, args.sizes.split(",")):
        rng = np.random.default_rng(0)
        outputs = pool(size, args.classes, args.width, rng)
        labeled = np.zeros(size, bool)
        labeled[rng.choice(size, args.labeled, replace=False)] = True
        labels = np.where(labeled, outputs.probabilities.argmax(1), -1)
        times = {}
        for name, selector in SELECTORS.items():
            best = np.inf
            for repeat in range(args.repeats):
                start = time.perf_counter()
                selector.select(outputs, labeled, labels, args.batch, np.random.default_rng(repeat))
                best = min(best, time.perf_counter() - start)
            times[name] = best
            print(f"{size:>9} {name:>17} {best:>9.4f} {best / times['margin']:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
