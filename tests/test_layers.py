"""Imports point one way: core <- datamodules <- lightning_modules <- callbacks <- app <- hydra_plugins <-
run.py; the product never imports tests or benchmarks, and tests do not import benchmarks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# hydra_plugins/: our Hydra plugins (the Optuna sweeper, the SLURM launcher), which drive the application.
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
    for layer in LAYERS[:-1]:
        files += [(layer, path) for path in sorted((ROOT / layer).rglob("*.py"))]
    return files


@pytest.mark.parametrize(("layer", "path"), layer_files(), ids=lambda v: str(v).replace(str(ROOT) + "/", ""))
def test_a_module_imports_only_its_own_layer_and_those_below(layer, path):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    upward = project_imports(path) - allowed
    assert not upward, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(upward)}: a higher layer or tests"


def test_every_product_package_has_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {*OUTSIDE}
    namespaces = {p.parent.parent.name for p in ROOT.glob("*/*/__init__.py")} - packages - {*OUTSIDE}
    unlayered = (packages | namespaces) - set(LAYERS)
    assert not unlayered, f"packages without a layer: {sorted(unlayered)}"


def test_hydra_plugins_is_a_namespace_package_that_hydra_scans():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    assert not (ROOT / "hydra_plugins" / "__init__.py").exists(), \
        "an __init__.py would hide the Hydra plugins installed in site-packages (the submitit launcher)"
    sweepers = {plugin.__module__ for plugin in Plugins.instance().discover(Sweeper)}
    assert "hydra_plugins.visionlab_optuna_sweeper.optuna_sweeper" in sweepers
    plugins = {plugin.__module__.split(".")[1] for plugin in Plugins.instance().discover()}
    assert "hydra_submitit_launcher" in plugins


def test_the_tests_do_not_import_the_benchmarks():
    importing = [path.name for path in sorted((ROOT / "tests").glob("*.py"))
                 if "benchmarks" in project_imports(path)]
    assert not importing, f"tests importing benchmarks/: {importing}"
