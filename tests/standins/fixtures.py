"""Fixtures that put the stand-ins to work: PATH, a fake CANN toolkit, call logs, an "om".

Import them into a conftest.py (`from tests.standins.fixtures import *`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

STANDINS = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent  # so the stand-ins' `python3` has onnx and onnxruntime
TOOLKIT_VERSION = "7.0.0"


@pytest.fixture
def clean_env(monkeypatch):
    """No STANDIN_* knobs from elsewhere, no CANN variables, the venv's python3 first on PATH."""
    for key in list(os.environ):
        if key.startswith("STANDIN_") or key.startswith("ASCEND_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return monkeypatch


@pytest.fixture
def standins_on_path(clean_env):
    clean_env.setenv("PATH", f"{STANDINS}{os.pathsep}{os.environ['PATH']}")
    return STANDINS


@pytest.fixture
def fake_toolkit(tmp_path, clean_env) -> Path:
    """A CANN toolkit home: set_env.sh that puts the stand-in atc on PATH, plus version info."""
    home = tmp_path / "Ascend" / "ascend-toolkit"
    info = home / "latest" / "x86_64-linux" / "ascend_toolkit_install.info"
    info.parent.mkdir(parents=True)
    info.write_text(f"package_name=Ascend-cann-toolkit\nversion={TOOLKIT_VERSION}\n"
                    "innerversion=V100R001C15SPC001B220\narch=x86_64\nos=linux\n")
    (home / "set_env.sh").write_text(
        "# stand-in CANN set_env.sh (tests only)\n"
        'echo "set_env.sh chatter that must not reach the parsed environment"\n'
        f'export ASCEND_TOOLKIT_HOME="{home}/latest"\n'
        f'export ASCEND_OPP_PATH="{home}/latest/opp"\n'
        f'export PATH="{STANDINS}:$PATH"\n'
        'export CGAN_MULTILINE="line one\nline two"\n'
    )
    return home


def fake_toolkit_home(root: Path) -> Path:
    """<root>/ascend-toolkit, a stand-in CANN home whose set_env.sh puts the stand-ins on PATH
    (for DAG runs, which source it in a task's own process)."""
    home = root / "ascend-toolkit"
    info = home / "latest" / "x86_64-linux" / "ascend_toolkit_install.info"
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_text(f"version={TOOLKIT_VERSION}\n")
    (home / "set_env.sh").write_text(
        f'export ASCEND_TOOLKIT_HOME="{home}/latest"\nexport ASCEND_OPP_PATH="{home}/latest/opp"\n'
        f'export PATH="{STANDINS}:$PATH"\n')
    return home


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """Record every stand-in call; calls("atc") / calls("msame") -> list of {argv, cwd, ...}."""
    paths = {tool: tmp_path / f"{tool}-calls.jsonl" for tool in ("atc", "msame")}
    monkeypatch.setenv("STANDIN_ATC_CALLS", str(paths["atc"]))
    monkeypatch.setenv("STANDIN_MSAME_CALLS", str(paths["msame"]))

    def read(tool: str) -> list[dict]:
        path = paths[tool]
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return read


@pytest.fixture(scope="session")
def standin_om(upstream_onnx, tmp_path_factory) -> Path:
    """An "om" as the stand-in atc makes it: a byte copy of the ONNX file (C = 1, batch 100)."""
    om = tmp_path_factory.mktemp("om") / "cgan.om"
    shutil.copyfile(upstream_onnx, om)
    return om


@pytest.fixture
def bins3(tmp_path) -> Path:
    from cgan.recipe.bins import write_bins

    write_bins(tmp_path / "bins", 3, seed=7)
    return tmp_path / "bins"


@pytest.fixture
def ais_bench_api(clean_env):
    """The stand-in ais_bench + aclruntime packages importable (tests/standins/ais_bench_api)."""
    for name in [m for m in sys.modules if m == "aclruntime" or m.split(".")[0] == "ais_bench"]:
        clean_env.delitem(sys.modules, name)
    clean_env.syspath_prepend(str(STANDINS / "ais_bench_api"))
    yield STANDINS / "ais_bench_api"
    for name in [m for m in sys.modules if m == "aclruntime" or m.split(".")[0] == "ais_bench"]:
        del sys.modules[name]
