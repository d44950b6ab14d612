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
    assert len(names) == 6 and all((folder / name).is_file() for name in names)
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


def imported_top_level_names(package: str) -> set[str]:
    """Top-level module names of every import (lazy ones inside functions included) in a package's files."""
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_a_declared_dependency():
    declared = {re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower().replace("_", "-")
                for spec in PYPROJECT["project"]["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    own = set(INSTALLED_PACKAGES) | {"checkpoints"}
    missing = {}
    for package in INSTALLED_PACKAGES:
        for name in imported_top_level_names(package) - own - set(sys.stdlib_module_names) - {"__future__"}:
            dists = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
            if not dists & declared:
                missing[name] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
