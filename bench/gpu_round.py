"""One federated round of the CNN on Fashion-MNIST with each client worker on a whole GPU.

    python bench/gpu_round.py [--clients-per-round 10] [--workers 1]

For a machine with CUDA GPUs (and a CUDA build of torch); it stops at once, saying why, without
one. Runs on an embedded local Ray with the machine's GPUs, ``cluster.worker.num_gpus=1``, and
prints the device each worker used (from summary.json) and the time of the round. Not part of
the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import torch

import sim


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients-per-round", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "gpu_round: no CUDA GPU for torch here (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}); run it on a machine with a GPU and a CUDA build of torch",
            file=sys.stderr,
        )
        return 1
    gpus = torch.cuda.device_count()
    if args.workers > gpus:
        print(f"gpu_round: --workers {args.workers} > the {gpus} GPUs here", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        result = sim.run(
            [
                "env=fashion_mnist",
                "model=cnn",
                "protocol.rounds=1",
                "protocol.eval_clients=10",
                f"protocol.clients_per_round={args.clients_per_round}",
                f"cluster.num_gpus={gpus}",
                "cluster.worker.num_gpus=1",
                f"cluster.num_workers={args.workers}",
                "progress=false",
                f"output_dir={tmp}/run",
            ]
        )
        summary = json.loads((result.output_dir / "summary.json").read_text())
    print(f"workers: {args.workers} on {gpus} GPU(s) ({torch.cuda.get_device_name(0)})")
    print(f"devices the workers used: {summary['worker_devices']}")
    print(f"round time: {result.history[0]['round_time_s']:.2f} s (with evaluation)")
    print(f"test accuracy after the round: {result.final['test_accuracy']:.4f}")
    return 0 if summary["worker_devices"] == ["cuda:0"] else 1


if __name__ == "__main__":
    sys.exit(main())
