"""The arrows of docs/architecture.md, read from the source: a subpackage imports only the ones
below it, and the instrument side (`dklscope.drivers`, `dklscope.simulators`) never imports the
controller or torch. Every import counts: at the top of a module, inside a function, or under
``TYPE_CHECKING``."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import dklscope
import dklscope.drivers
import dklscope.simulators

# What each subpackage of the controller may import, besides itself and the instrument side.
# The picture: docs/architecture.md.
MAY_IMPORT: dict[str, set[str]] = {
    "config": set(),
    "embeddings": {"config"},
    "model": {"config", "embeddings"},
    "campaign": {"config", "embeddings", "model"},
    "observe": {"config", "embeddings", "model", "campaign"},
    "bluesky": {"config", "embeddings", "model", "campaign"},
    "bench": {"config", "embeddings", "model", "campaign", "observe"},
    "cli": {"config", "embeddings", "model", "campaign", "observe", "bench"},
}
INSTRUMENT_SIDE = {"drivers", "simulators"}
HEAVY = ("torch", "gpytorch", "botorch", "pyro")


def imported_modules(source: str, module: str, *, is_package: bool) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, as absolute dotted names."""
    found: set[str] = set()
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # "from dklscope import model" imports the subpackage `model`
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def room(module: str) -> str | None:
    """The subpackage of ``dklscope`` a dotted module name is in; None outside dklscope or for
    the top-level package itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "dklscope" and len(parts) > 1 else None


def wrong_arrows(imports: dict[str, set[str]]) -> list[str]:
    """The imports, of ``imports`` (module -> what it imports), that go against `MAY_IMPORT`."""
    wrong = []
    for module, targets in sorted(imports.items()):
        here = room(module)
        if here not in MAY_IMPORT:
            continue  # dklscope/__init__.py and __main__.py sit above everything
        seen = set()
        for target in sorted(targets):  # a module before the names imported from it
            there = room(target)
            if there is None or there == here or there in INSTRUMENT_SIDE or there in seen:
                continue
            if there not in MAY_IMPORT[here] and there in MAY_IMPORT:
                seen.add(there)
                wrong.append(f"{module} imports {target} ({there} is above {here})")
    return wrong


def _modules(package: object) -> dict[str, set[str]]:
    root = Path(package.__file__).parent  # type: ignore[attr-defined]
    name = package.__name__  # type: ignore[attr-defined]
    result = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join([name, *(parts[:-1] if is_package else parts)])
        result[module] = imported_modules(path.read_text(), module, is_package=is_package)
    return result


def test_the_checker_reads_relative_lazy_and_type_checking_imports():
    source = (
        "from typing import TYPE_CHECKING\n"
        "from .dkl import DKLModel\n"
        "from .. import campaign\n"
        "if TYPE_CHECKING:\n"
        "    from dklscope.observe.report import write_report\n"
        "def f():\n"
        "    import dklscope.bench.grid\n"
    )
    found = imported_modules(source, "dklscope.model.policies", is_package=False)
    assert {"dklscope.model.dkl", "dklscope.campaign", "dklscope.observe.report"} <= found
    assert "dklscope.bench.grid" in found
    assert wrong_arrows({"dklscope.model.policies": found}) == [
        "dklscope.model.policies imports dklscope.bench.grid (bench is above model)",
        "dklscope.model.policies imports dklscope.campaign (campaign is above model)",
        "dklscope.model.policies imports dklscope.observe.report (observe is above model)",
    ]
    assert wrong_arrows({"dklscope.campaign.loop": found}) == [
        "dklscope.campaign.loop imports dklscope.bench.grid (bench is above campaign)",
        "dklscope.campaign.loop imports dklscope.observe.report (observe is above campaign)",
    ]


def test_every_subpackage_of_the_controller_is_placed():
    root = Path(dklscope.__file__).parent
    subpackages = {p.parent.name for p in root.glob("*/__init__.py")}
    assert subpackages == set(MAY_IMPORT)
    assert sorted(p.name for p in root.glob("*.py")) == ["__init__.py", "__main__.py"]


def test_no_subpackage_imports_one_above_it():
    assert wrong_arrows(_modules(dklscope)) == []


def test_the_instrument_side_imports_neither_the_controller_nor_torch():
    wrong = []
    for package in (dklscope.drivers, dklscope.simulators):
        for module, targets in _modules(package).items():
            for target in targets:
                there = room(target)
                heavy = target.split(".")[0] in HEAVY
                above = there is not None and there not in INSTRUMENT_SIDE
                # the drivers come first: they do not import the simulators either
                simulators = there == "simulators" and room(module) == "drivers"
                if heavy or above or simulators:
                    wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_importing_the_instrument_side_loads_no_torch():
    code = (
        "import importlib, pkgutil, sys\n"
        "import dklscope.drivers, dklscope.simulators\n"
        "for m in pkgutil.walk_packages(dklscope.simulators.__path__, 'dklscope.simulators.'):\n"
        "    importlib.import_module(m.name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_public_api_is_named_by_dklscope_and_loads_torch_only_when_used():
    code = (
        "import sys\n"
        "import dklscope\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "missing = [n for n in dklscope.__all__ if getattr(dklscope, n, None) is None]\n"
        "print(missing, 'torch' in sys.modules, dklscope.Campaign.__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.splitlines() == ["[]", "[] True dklscope.campaign.loop"]
    assert {"Campaign", "Journal", "load_config", "PolicyState", "Choice"} <= set(dklscope.__all__)


def test_no_public_name_is_hidden_by_a_module_of_the_same_name():
    # importing dklscope.bench.paired would set the attribute `paired` of dklscope.bench to the
    # module, over the function of that name its __all__ promises
    for package in ("dklscope", *(f"dklscope.{name}" for name in MAY_IMPORT)):
        module = importlib.import_module(package)
        submodules = {m.name for m in pkgutil.iter_modules(module.__path__)}
        assert submodules.isdisjoint(getattr(module, "__all__", ())), package


def test_every_subpackage_is_in_the_distribution():
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).parents[2]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    package_root = Path(dklscope.__file__).parent
    found = {
        ".".join(("dklscope", *p.parent.relative_to(package_root).parts))
        for p in package_root.rglob("__init__.py")
    }
    assert found - listed == set()
