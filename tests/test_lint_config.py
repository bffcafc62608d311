"""The lint configuration in pyproject.toml: ruff's banned-api rule keeps Airflow out of cgan/.

ruff reads the code from stdin and is told where the file would live (--stdin-filename), so it
applies the repository's real configuration, per-file scoping included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

AIRFLOW_IMPORTS = [
    "import airflow\n",
    "from airflow.sdk import BaseOperator\n",
    "import airflow.models.dag as dag_module\n",
    "def hook():\n    from airflow.providers.amazon.aws.hooks.s3 import S3Hook\n\n    return S3Hook\n",
]


def ruff(source: str, filename: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "TID251", "--output-format", "concise",
         "--stdin-filename", filename, "-"],
        input=source, cwd=REPO, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("source", AIRFLOW_IMPORTS)
@pytest.mark.parametrize("filename", ["cgan/x.py", "cgan/ascend/x.py"])
def test_airflow_import_in_cgan_is_refused(source, filename):
    proc = ruff(source, filename)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "TID251 `airflow` is banned" in proc.stdout and "operators/, dags/ or plugins/" in proc.stdout


@pytest.mark.parametrize("filename", ["operators/x.py", "dags/x.py", "plugins/x.py", "tests/x.py"])
def test_airflow_import_elsewhere_is_allowed(filename):
    proc = ruff("from airflow.sdk import BaseOperator\n", filename)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_module_named_like_airflow_is_not_caught():
    proc = ruff("import airflowlike\n", "cgan/x.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
