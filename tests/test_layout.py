"""The architecture's rooms and import direction, checked on the source: plug-in interfaces are
light, the runtime knows no protocol, algorithm, env or model, plug-ins never reach into the
runtime; models live in ``models/``, algorithms in the group of the interface they implement;
and importing a selector loads neither Ray, Hydra nor torch."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_class
from omegaconf import OmegaConf

from sim.errors import ConfigError
from sim.runtime.config import MOVED, build_component
from tests.conftest import REPO

# package (a folder) -> module prefixes its files must not import
PLUGINS = ("algorithms", "envs", "models")
FORBIDDEN = {
    "sim": PLUGINS,  # the framework names plug-ins only in configs
    "sim/interfaces": ("ray", "hydra", "omegaconf", "torch", "sim.runtime", "sim.protocols"),
    "sim/runtime": ("sim.protocols",),
    "sim/training": ("ray", "hydra", "sim.runtime", "sim.protocols"),
    "algorithms": ("ray", "hydra", "sim.runtime", "sim.protocols", "sim.reporting", "envs"),
    "envs": ("ray", "hydra", "sim.runtime", "sim.protocols", "sim.reporting", "algorithms",
             "models"),
    "models": ("ray", "hydra", "sim.runtime", "sim.protocols", "sim.reporting", "algorithms",
               "envs"),
}  # fmt: skip
# algorithms/<group>/ -> the interfaces (sim.interfaces.<group>) its plug-ins implement
GROUPS = {
    "federated": ("FederatedAlgorithm",),
    "active": ("Selector",),
    "covering": ("CoveringAlgorithm",),
    "retraining": ("RetrainingAlgorithm",),
    "teacher_student": ("StudentAlgorithm",),
    "pretraining": ("PretrainingObjective",),
    "synthesis": ("SoftPromptMethod", "HardPromptMethod", "ReferenceMethod"),
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
        "import sys, algorithms.active.margin, algorithms.active.badge, algorithms.active.coreset\n"
        "print([m for m in ('ray', 'hydra', 'omegaconf', 'torch') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def nodes(group: str) -> dict[str, dict]:
    """``conf/<group>/<name>.yaml`` -> its node (``<group>:`` in a ``_global_`` YAML), for the
    YAMLs that name a ``_target_`` (the others extend one that does)."""
    found = {}
    for path in sorted((REPO / "conf" / group).glob("*.yaml")):
        config = yaml.safe_load(path.read_text()) or {}
        node = config if "_target_" in config else config.get(group) or {}
        if "_target_" in node:
            found[path.stem] = {k: v for k, v in node.items() if k != "defaults"}
    return found


def targets(group: str) -> dict[str, str]:
    return {name: node["_target_"] for name, node in nodes(group).items()}


def test_models_live_in_models():
    """Every model and learner a config names is in ``models/``; ``envs/`` defines no network
    (no ``nn.Module``, no class whose ``build`` returns one)."""
    named = {**targets("model"), **targets("learner")}
    assert named and all(t.startswith("models.") for t in named.values()), named
    in_envs = [
        f"{path.name}: {node.name}"
        for path in (REPO / "envs").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and (
            any(
                isinstance(f, ast.FunctionDef) and "Module" in ast.unparse(f.returns or ast.Pass())
                for f in node.body
            )
            or any("Module" in ast.unparse(base) for base in node.bases)
        )
    ]
    assert not in_envs, in_envs
    assert all(t.startswith("envs.") for t in targets("env").values())


def test_algorithms_live_in_the_group_of_their_interface():
    """No module directly under ``algorithms/``; every algorithm a config names is in
    ``algorithms/<group>/`` and implements that group's interface (built with its defaults)."""
    loose = [p.name for p in (REPO / "algorithms").glob("*.py") if p.name != "__init__.py"]
    assert not loose, loose
    assert sorted(p.name for p in (REPO / "algorithms").iterdir() if p.is_dir() and
                  p.name != "__pycache__") == sorted(GROUPS)  # fmt: skip
    named = nodes("algorithm")
    assert len(named) > 20
    for name, node in named.items():
        target = node["_target_"]
        parts = target.split(".")
        assert len(parts) == 4 and parts[0] == "algorithms" and parts[1] in GROUPS, (name, target)
        interfaces = importlib.import_module(f"sim.interfaces.{parts[1]}")
        component = build_component("algorithm", OmegaConf.create(node))
        assert any(isinstance(component, getattr(interfaces, i)) for i in GROUPS[parts[1]]), (
            name,
            target,
        )


def test_old_paths_fail_naming_the_new_one():
    """A ``_target_`` saved before the move fails in one line that names where it is now."""
    with pytest.raises(ConfigError, match=r"'algorithms.margin.Margin' moved to "
                       r"'algorithms.active.margin.Margin'"):  # fmt: skip
        build_component("algorithm", OmegaConf.create({"_target_": "algorithms.margin.Margin"}))
    with pytest.raises(ConfigError, match=r"'envs.models.CNN' moved to 'models.cnn.CNN'"):
        build_component("model", OmegaConf.create({"_target_": "envs.models.CNN"}))
    for new in MOVED.values():  # the table points at what is there
        assert importlib.util.find_spec(new) if new.islower() else get_class(new), new


def test_no_function_is_longer_than_80_lines():
    """Loops read top to bottom: no function or method of the framework or a plug-in room runs
    past 80 lines (the body split into named steps instead)."""
    long = [
        f"{path.relative_to(REPO)}::{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for room in ("sim", *PLUGINS)
        for path in (REPO / room).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, long
