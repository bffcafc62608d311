"""The layer contracts of pyproject.toml (import-linter, run by `make lint`) hold on the tree,
and each one fails on a deliberate violation.

Each case copies the checked packages into a temporary folder, adds one import that breaks one
rule, and runs lint-imports there with the repository's own configuration."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cgan", "operators", "dags", "plugins", "scripts")


def lint_imports(root: Path, contract: str | None = None) -> subprocess.CompletedProcess:
    args = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    if contract:
        args += ["--contract", contract]
    return subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the checked packages' Python files and the configuration."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.png", "*.onnx", "*.pth", "*.json"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract(tree):
    proc = lint_imports(tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 kept, 0 broken" in proc.stdout


VIOLATIONS = [
    # (contract id, file that gets the import, the import, what the report names)
    ("data-flow", "cgan/storage/keys.py", "import cgan.run.plan", "cgan.storage is not allowed to import cgan.run"),
    ("data-flow", "cgan/layout/workspace.py", "from cgan.recipe import bins",
     "cgan.layout is not allowed to import cgan.recipe"),
    ("data-flow", "cgan/newcomer.py", "", "cgan.newcomer"),  # every module has a layer (exhaustive)
    ("settings-outside", "cgan/recipe/bins.py", "from cgan import settings",
     "cgan.recipe is not allowed to import cgan.settings"),
    ("run-publishing", "cgan/run/staging.py", "import cgan.publishing.publish",
     "cgan.run is not allowed to import cgan.publishing"),
    ("no-airflow-in-cgan", "cgan/quality/gate.py", "import airflow", "cgan is not allowed to import airflow"),
    ("outer-layers", "operators/base.py", "import plugins.cgan_gallery", "operators is not allowed to import plugins"),
]


@pytest.mark.parametrize("contract, path, line, named", VIOLATIONS, ids=[f"{c}:{p}" for c, p, *_ in VIOLATIONS])
def test_each_contract_fails_on_a_violation(tree, contract, path, line, named):
    target = tree / path
    target.write_text((target.read_text() if target.exists() else '"""A new module."""\n') + f"\n{line}\n")
    proc = lint_imports(tree, contract)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BROKEN" in proc.stdout and named in proc.stdout, proc.stdout
