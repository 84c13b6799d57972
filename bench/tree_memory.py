"""Peak memory of a command and every process it starts (the driver and its embedded Ray).

    python bench/tree_memory.py -- python -m sim env.num_clients=100000 ...

Samples, every ``--every`` seconds, the proportional set size (PSS, /proc/PID/smaps_rollup) of
the command's process tree, so memory shared between processes (Ray's object store, mapped by
the driver and every worker) is counted once, and the peak RSS (VmHWM) of each process. Prints
the peak total, the largest single process and the wall time. Linux only; not in the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

GIB = 2**30


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the task has exited
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children(pid)
    return pids


def kib(pid: int, field: str, file: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass  # the process has exited
    return 0


def name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:60]
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    peak_total = processes = 0
    largest = (0, "")  # (peak RSS in KiB, process name)
    while proc.poll() is None:
        pids = tree(proc.pid)
        processes = max(processes, len(pids))
        peak_total = max(peak_total, sum(kib(p, "Pss", "smaps_rollup") for p in pids))
        for pid in pids:
            largest = max(largest, (kib(pid, "VmHWM", "status"), name(pid)))
        time.sleep(args.every)
    wall = time.perf_counter() - start
    print(
        f"tree_memory: exit {proc.returncode}, {wall:.1f} s; peak PSS of the process tree "
        f"{peak_total * 1024 / GIB:.2f} GiB (up to {processes} processes); largest process "
        f"{largest[1]!r}, peak RSS {largest[0] * 1024 / GIB:.2f} GiB",
        file=sys.stderr,
    )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
