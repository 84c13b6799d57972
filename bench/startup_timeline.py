"""Where a federated run's wall time goes, from process start to exit, step by step.

    python bench/startup_timeline.py [OVERRIDES...]      # default: the default run

Runs ``python -m sim OVERRIDES`` (with ``progress=false`` and a temporary output folder) in a
child process that timestamps the runtime's steps: the imports, Hydra's composition, the
protocol's ``prepare`` and Ray's start (which overlap), the actors' start, the rounds, Ray's
shutdown and the outputs (which overlap), and the exit. The times are measured from the child's
process start (read from /proc), and its exit from here. Also prints the CPU seconds every
process of the run's tree had used when the rounds ended: on 2 cores, the run's wall time
cannot be below half of their sum. Linux only; not in the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARKS = os.environ.get("COHORT_TIMELINE")  # set in the child: the file its marks go to


def process_start() -> float:
    """This process's start, in ``time.time()`` seconds (from /proc: before the interpreter)."""
    from tree_memory import stat_fields

    ticks = int(stat_fields("self")[19])  # starttime
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def child(overrides: list[str]) -> None:
    """Run the CLI with its steps wrapped; write the marks and the CPU table at exit."""
    import atexit

    start = process_start()
    marks: list[tuple[str, float]] = [("interpreter up", time.time() - start)]
    cpu: list[tuple[float, str]] = []

    def mark(name: str) -> None:
        marks.append((name, time.time() - start))

    import sim.__main__ as cli

    mark("imports of sim.__main__")
    import ray

    from sim.protocols.federated import protocol
    from sim.runtime import run, session, workers

    def timed(owner: object, attribute: str, name: str, after: object = None) -> None:
        original = getattr(owner, attribute)

        def wrapper(*args, **kwargs):
            mark(f"{name}: begins")
            try:
                return original(*args, **kwargs)
            finally:
                mark(f"{name}: ends")
                if after is not None:
                    after()

        setattr(owner, attribute, wrapper)

    def cpu_table() -> None:
        from tree_memory import cpu_seconds, name, tree

        cpu.extend(sorted(((cpu_seconds(p), name(p)) for p in tree(os.getpid())), reverse=True))

    timed(protocol.Federated, "prepare", "prepare (data, checks)")
    timed(session, "start_ray", "Ray's start")
    timed(workers.WorkerGroup, "__init__", "worker actors (the server beside them)")
    timed(run.Context, "begin", "first round")
    timed(protocol.RoundJob, "run", "actors and rounds", after=cpu_table)
    timed(ray, "shutdown", "Ray's shutdown")
    timed(run, "write_outputs", "summary and plot")

    def write() -> None:
        mark("exit handlers")
        Path(MARKS).write_text(json.dumps({"marks": marks, "cpu": cpu}))

    atexit.register(write)
    sys.argv = ["cohort", *overrides]
    cli.main()


def main() -> None:
    overrides = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        marks_file = Path(tmp) / "marks.json"
        command = [sys.executable, __file__, *overrides, "progress=false", f"output_dir={tmp}/run"]
        env = {**os.environ, "COHORT_TIMELINE": str(marks_file)}
        here = Path(__file__).resolve().parent  # this checkout (Ray's workers too) and bench/
        paths = [str(here.parent), str(here), os.environ.get("PYTHONPATH")]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
        begin = time.time()
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.time() - begin
        if proc.returncode:
            raise SystemExit(f"the run failed:\n{proc.stderr[-3000:]}")
        found = json.loads(marks_file.read_text())
    print(
        f"startup_timeline: python -m sim {' '.join(overrides)}; load average "
        f"{os.getloadavg()[0]:.2f}; {os.cpu_count()} cores"
    )
    print(f"  {'at s':>6}  {'took s':>6}  step (took: since its begin, or since the mark before)")
    previous, begun = 0.0, {}
    for name, at in found["marks"]:
        step, _, edge = name.rpartition(": ")
        if edge == "begins":
            begun[step] = at
            print(f"  {at:6.2f}  {'':>6}  {name}")
        else:
            took = at - begun.get(step, previous)
            print(f"  {at:6.2f}  {took:6.2f}  {name}")
        previous = at
    print(f"  {wall:6.2f}  {wall - previous:6.2f}  process exit (measured by the parent)")
    total = sum(seconds for seconds, _ in found["cpu"])
    print(f"\n  CPU seconds of the run's processes when the rounds ended: {total:.1f} in all")
    for seconds, name in found["cpu"]:
        if seconds >= 0.05:
            print(f"  {seconds:6.2f}  {name}")


if __name__ == "__main__":
    if MARKS:
        child(sys.argv[1:])
    else:
        main()
