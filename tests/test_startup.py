"""The run's fixed costs: ``prepare`` beside Ray's start, the outputs beside its shutdown, and a
command line that ends without the interpreter's teardown."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

import sim
from sim.errors import ConfigError
from sim.protocols.federated.protocol import Federated
from sim.runtime import run as run_module
from sim.runtime.run import PREPARE_HEAD_START_S, Beside


def test_beside_returns_the_value_or_raises_the_error_in_the_caller():
    release = threading.Event()
    waiting = Beside(lambda: release.wait(5) and 42)
    assert not waiting.done(within=0.05)
    release.set()
    assert waiting.result() == 42 and waiting.done()

    def fails():
        raise ConfigError("no")

    with pytest.raises(ConfigError, match="no"):
        Beside(fails).result()


@pytest.fixture
def no_ray(monkeypatch):
    """The run's view of Ray: not started; the session a recorder of when it starts and stops."""
    events: list[str] = []

    @contextmanager
    def session(cluster, worker_setup=False):
        events.append("ray started")
        try:
            yield
        finally:
            events.append("ray stopped")

    monkeypatch.setattr(run_module.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(run_module, "ray_session", session)
    return events


def test_a_slow_refusal_in_prepare_comes_once_ray_has_started_and_writes_nothing(
    no_ray, monkeypatch, tmp_path
):
    def slow_refusal(self, setup):
        time.sleep(PREPARE_HEAD_START_S + 0.5)
        no_ray.append("prepare refused")
        raise ConfigError("protocol.clients_per_round: too many")

    monkeypatch.setattr(Federated, "prepare", slow_refusal)
    with pytest.raises(ConfigError, match="too many"):
        sim.run(["progress=false", f"output_dir={tmp_path / 'run'}"])
    # Ray started while prepare ran; the refusal came inside the session, which then stopped
    assert no_ray == ["ray started", "prepare refused", "ray stopped"]
    assert not (tmp_path / "run").exists()


def test_a_quick_refusal_in_prepare_comes_before_ray_starts(no_ray, monkeypatch, tmp_path):
    def refusal(self, setup):
        raise ConfigError("model: no")

    monkeypatch.setattr(Federated, "prepare", refusal)
    with pytest.raises(ConfigError, match="model: no"):
        sim.run(["progress=false", f"output_dir={tmp_path / 'run'}"])
    assert no_ray == []


def test_the_command_line_ends_after_the_exit_handlers_and_with_its_output_flushed():
    code = (
        "import atexit\n"
        "import sim.__main__ as cli\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "print('buffered', end=' ')\n"  # a pipe: block-buffered until flushed
        "cli.exit_now(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered handler ran\n"
