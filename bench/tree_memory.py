"""Peak memory of a command and every process it starts (the driver and its embedded Ray).

    python bench/tree_memory.py -- python -m sim env.num_clients=100000 ...

Samples, every ``--every`` seconds, the proportional set size (PSS, /proc/PID/smaps_rollup) of
the command's process tree, so memory shared between processes (Ray's object store, mapped by
the driver and every worker) is counted once, the peak RSS (VmHWM) of each process and its CPU
time. Prints the peak total, the largest single process, the tree's CPU seconds and the wall
time. Linux only; not in the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
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


def stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command's name (field 3 first; [] once it has
    exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """The user + system CPU time ``pid`` has used so far (0 once it has exited)."""
    fields = stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12]) if fields else 0  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Peak:
    """What :func:`watch` saw: the tree's peak PSS, its most processes, the process with the
    largest peak RSS (KiB, name), and each process's CPU seconds when last seen (a lower bound:
    the CPU a process uses after its last sample is missed)."""

    pss_kib: int = 0
    processes: int = 0
    largest: tuple[int, str] = (0, "")
    cpu: dict[int, float] = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu.values())


def watch(proc: subprocess.Popen, every: float) -> Peak:
    """Sample ``proc``'s process tree every ``every`` seconds until it exits."""
    peak = Peak()
    while proc.poll() is None:
        pids = tree(proc.pid)
        peak.processes = max(peak.processes, len(pids))
        peak.pss_kib = max(peak.pss_kib, sum(kib(p, "Pss", "smaps_rollup") for p in pids))
        for pid in pids:
            peak.largest = max(peak.largest, (kib(pid, "VmHWM", "status"), name(pid)))
            peak.cpu[pid] = max(peak.cpu.get(pid, 0.0), cpu_seconds(pid))
        time.sleep(every)
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    peak = watch(proc, args.every)
    wall = time.perf_counter() - start
    print(
        f"tree_memory: exit {proc.returncode}, {wall:.1f} s; peak PSS of the process tree "
        f"{peak.pss_kib * 1024 / GIB:.2f} GiB (up to {peak.processes} processes); largest process "
        f"{peak.largest[1]!r}, peak RSS {peak.largest[0] * 1024 / GIB:.2f} GiB; CPU of the tree "
        f"at least {peak.cpu_s:.1f} s",
        file=sys.stderr,
    )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
