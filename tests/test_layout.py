"""The architecture's import direction, checked on the source: plug-in interfaces are light, the
runtime knows no protocol, algorithm or env, plug-ins never reach into the runtime; and importing
a selector loads neither Ray, Hydra nor torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# package (a folder) -> module prefixes its files must not import
FORBIDDEN = {
    "sim/interfaces": ("ray", "hydra", "omegaconf", "torch", "sim.runtime", "sim.protocols"),
    "sim/runtime": ("sim.protocols", "algorithms", "envs"),
    "sim/protocols": ("algorithms", "envs"),
    "sim/training": ("ray", "hydra", "sim.runtime", "sim.protocols"),
    "algorithms": ("ray", "hydra", "sim.runtime", "sim.protocols", "sim.reporting"),
    "envs": ("ray", "hydra", "sim.runtime", "sim.protocols", "sim.reporting"),
}


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` anywhere in ``path`` names, except under
    ``if TYPE_CHECKING:`` (annotations only)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", list(FORBIDDEN))
def test_import_direction(package):
    wrong = {
        f"{path.relative_to(REPO)}: {module}"
        for path in (REPO / package).rglob("*.py")
        for module in imported_modules(path)
        if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[package])
    }
    assert not wrong, sorted(wrong)


def test_importing_a_selector_loads_no_ray_hydra_or_torch():
    code = (
        "import sys, algorithms.margin, algorithms.badge, algorithms.coreset\n"
        "print([m for m in ('ray', 'hydra', 'omegaconf', 'torch') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
