"""Packaging: the shipped priors are package data found through importlib.resources, and every library the
installed packages import is a declared dependency. (That a built wheel, installed in a fresh venv, denoises
the example from another folder is checked by .ci/run, which builds and installs it.)"""

import ast
import fnmatch
import importlib.metadata
import importlib.resources
import re
import sys
from pathlib import Path

import pytest

from common.prior_files import CHECKPOINTS_ENV, MANIFEST_NAME, default_checkpoint_dir, read_manifest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
INSTALLED_PACKAGES = ("common", "dvi", "prior_training")


def test_checkpoint_dir_is_the_checkpoints_package_unless_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv(CHECKPOINTS_ENV, raising=False)
    folder = default_checkpoint_dir()
    assert folder == Path(str(importlib.resources.files("checkpoints")))
    names = set(read_manifest(folder))
    assert len(names) == 8 and all((folder / name).is_file() for name in names)
    assert (folder / "CORPUS.csv").is_file()
    monkeypatch.setenv(CHECKPOINTS_ENV, str(tmp_path))
    assert default_checkpoint_dir() == tmp_path


def test_package_data_patterns_cover_every_shipped_file():
    """Every non-Python file inside an installed package (priors, manifest, corpus list, preset YAML) is package data."""
    assert "checkpoints" in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    shipped = [path for package in (*INSTALLED_PACKAGES, "checkpoints") for path in (ROOT / package).rglob("*")
               if path.is_file() and path.suffix not in (".py", ".pyc")]
    names = {path.name for path in shipped}
    assert {MANIFEST_NAME, "CORPUS.csv", "bfdncnn_rgb_a.pt", "bfdncnn_gray_a.pt"} <= names
    for path in shipped:
        package = ".".join(path.parent.relative_to(ROOT).parts)
        patterns = package_data.get(package, []) + package_data.get("*", [])
        assert any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns), f"{path} is not package data"


def imported_top_level_names(package: str) -> dict[str, bool]:
    """Top-level module names of every import in a package's files, each with whether some import of it runs
    when its module is imported (False: only lazy imports, inside functions or ``if TYPE_CHECKING:``)."""
    names: dict[str, bool] = {}

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                found = [alias.name.split(".")[0] for alias in node.names]
            else:
                found = [node.module.split(".")[0]] if node.level == 0 and node.module else []
            for name in found:
                names[name] = names.get(name, False) or not lazy
        lazy = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) or (
            isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
        for child in ast.iter_child_nodes(node):
            visit(child, lazy)

    for path in (ROOT / package).rglob("*.py"):
        visit(ast.parse(path.read_text(), filename=str(path)), False)
    return names


def distribution_names(specs: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specs}


def test_every_third_party_import_is_a_declared_dependency():
    """Every import is a dependency, or an optional extra's (not ``test``) imported only lazily, so that the
    packages import without it (the code using it reports a missing extra as a one-line InputError)."""
    declared = distribution_names(PYPROJECT["project"]["dependencies"])
    extras = PYPROJECT["project"].get("optional-dependencies", {})
    optional = distribution_names([spec for extra, specs in extras.items() if extra != "test" for spec in specs])
    distributions = importlib.metadata.packages_distributions()
    own = set(INSTALLED_PACKAGES) | {"checkpoints"}
    missing, eager = {}, {}
    for package in INSTALLED_PACKAGES:
        imported = imported_top_level_names(package)
        for name in set(imported) - own - set(sys.stdlib_module_names) - {"__future__"}:
            dists = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
            if dists & declared:
                continue
            if not dists & optional:
                missing[name] = sorted(dists)
            elif imported[name]:
                eager[name] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert not eager, f"optional extras imported at module level (import them inside the function): {eager}"
