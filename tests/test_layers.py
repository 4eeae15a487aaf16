"""Imports point one way: core <- datamodules <- lightning_modules <- callbacks <- app <- hydra_plugins
(the Hydra plugins of the project) <- run.py; the
product never imports tests or benchmarks, and tests do not import benchmarks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "datamodules", "lightning_modules", "callbacks", "app", "hydra_plugins", "run")
OUTSIDE = ("tests", "benchmarks", "examples")


def project_imports(path: Path) -> set[str]:
    """The top-level project packages a file imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & {*LAYERS, *OUTSIDE}


def layer_files() -> list[tuple[str, Path]]:
    """(layer, file) for every Python file of the product."""
    files = [("run", ROOT / "run.py")]
    for layer in LAYERS[:-1]:  # hydra_plugins is a namespace package: no __init__.py of its own
        files += [(layer, path) for path in sorted((ROOT / layer).rglob("*.py"))]
    return files


@pytest.mark.parametrize(("layer", "path"), layer_files(), ids=lambda v: str(v).replace(str(ROOT) + "/", ""))
def test_a_module_imports_only_its_own_layer_and_those_below(layer, path):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    upward = project_imports(path) - allowed
    assert not upward, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(upward)}: a higher layer or tests"


def test_every_product_package_has_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {*OUTSIDE}
    assert packages <= set(LAYERS), f"packages without a layer: {sorted(packages - set(LAYERS))}"


def test_the_tests_do_not_import_the_benchmarks():
    importing = [path.name for path in sorted((ROOT / "tests").glob("*.py"))
                 if "benchmarks" in project_imports(path)]
    assert not importing, f"tests importing benchmarks/: {importing}"
