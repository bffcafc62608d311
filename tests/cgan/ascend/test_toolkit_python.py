"""atc and msame get CANN's Python, never this project's venv (cgan/ascend/toolkit.py).

The venv that runs these tests plays the project venv of the Ascend image: its bin folder is put
first on PATH and VIRTUAL_ENV names it, as the image does. "CANN's Python" is the interpreter the
venv was made from (sys.base_prefix: a real Python outside any venv), reached through a folder of
its own, as /usr/local/python3.x/bin is in a CANN image. The checks run that environment's
`python3` for real and ask it where its packages come from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cgan.ascend.errors import ToolchainNotFound
from cgan.ascend.toolkit import CANN_PYTHON_VAR, load_set_env, locate_toolkit, runtime_env, tools_base_env

VENV = Path(sys.prefix).resolve()
VENV_BIN = Path(sys.executable).parent
WHERE = "import sys, json; print(json.dumps([sys.prefix, sys.path]))"

pytestmark = pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the tests must run inside a venv")


@pytest.fixture()
def cann_python(tmp_path) -> Path:
    """A folder holding `python3` = the base interpreter (no venv), like a CANN image's Python."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    if not base.is_file():
        pytest.skip(f"no base interpreter at {base}")
    folder = tmp_path / "cann-python" / "bin"
    folder.mkdir(parents=True)
    (folder / "python3").symlink_to(base)
    return folder / "python3"


@pytest.fixture()
def image_env(monkeypatch, cann_python) -> None:
    """The Ascend image's environment: the project venv first on PATH, VIRTUAL_ENV set."""
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("VIRTUAL_ENV", str(VENV))
    monkeypatch.setenv("PYTHONPATH", f"{VENV / 'lib'}{os.pathsep}/opt/elsewhere")
    monkeypatch.setenv(CANN_PYTHON_VAR, str(cann_python))


def fake_toolkit(home: Path) -> Path:
    """A toolkit whose set_env.sh does what CANN's does to PATH/PYTHONPATH, plus a stand-in atc."""
    bin_dir = home / "latest" / "bin"
    bin_dir.mkdir(parents=True)
    atc = bin_dir / "atc"
    atc.write_text("#!/bin/sh\necho 'ATC stand-in 1.0'\n")
    atc.chmod(0o755)
    (home / "set_env.sh").write_text(
        "# stand-in CANN set_env.sh (tests only)\n"
        f'export ASCEND_TOOLKIT_HOME="{home}/latest"\n'
        f'export PATH="{bin_dir}:$PATH"\n'
        f'export PYTHONPATH="{home}/latest/python/site-packages:$PYTHONPATH"\n')
    return home


def python_of(env: dict[str, str]) -> tuple[str, list[str], str]:
    """(the python3 that env's PATH finds, its sys.prefix, its sys.path), by running it."""
    import json

    exe = shutil.which("python3", path=env["PATH"])
    assert exe is not None, env["PATH"]
    proc = subprocess.run([exe, "-c", WHERE], env=env, capture_output=True, text=True, check=True)
    prefix, path = json.loads(proc.stdout)
    return exe, path, prefix


def assert_no_venv(env: dict[str, str]) -> None:
    exe, path, prefix = python_of(env)
    assert not Path(exe).parent.resolve().is_relative_to(VENV), exe
    assert Path(prefix).resolve() == Path(sys.base_prefix).resolve(), prefix
    assert not any(p and Path(p).resolve().is_relative_to(VENV) for p in path), path
    assert "VIRTUAL_ENV" not in env
    assert not any(Path(e).resolve().is_relative_to(VENV) for e in env["PATH"].split(os.pathsep) if e)


def test_atc_environment_from_set_env_has_cann_python_not_the_venv(image_env, tmp_path, cann_python):
    toolkit = locate_toolkit(fake_toolkit(tmp_path / "ascend-toolkit"))
    assert_no_venv(toolkit.env)
    assert shutil.which("python3", path=toolkit.env["PATH"]) == str(cann_python)
    # set_env.sh's own additions are kept, and so is what is not the venv's
    assert toolkit.env["PATH"].split(os.pathsep)[0].endswith("latest/bin")
    assert toolkit.env["PYTHONPATH"].split(os.pathsep) == [
        str(tmp_path / "ascend-toolkit" / "latest" / "python" / "site-packages"), "/opt/elsewhere"]


def test_msame_environment_has_cann_python_with_and_without_set_env(image_env, tmp_path):
    env, where = runtime_env(fake_toolkit(tmp_path / "ascend-toolkit"))
    assert "set_env.sh" in where
    assert_no_venv(env)
    env, where = runtime_env(tmp_path / "no-toolkit-here")
    assert "not found" in where
    assert_no_venv(env)


def test_the_venv_would_leak_without_the_setting(image_env, monkeypatch, tmp_path):
    """The check can fail: without CGAN_ASCEND_PYTHON the venv's python3 is what atc would get."""
    monkeypatch.delenv(CANN_PYTHON_VAR)
    toolkit = locate_toolkit(fake_toolkit(tmp_path / "ascend-toolkit"))
    exe, _, prefix = python_of(toolkit.env)
    assert Path(prefix).resolve() == VENV
    with pytest.raises(AssertionError):
        assert_no_venv(toolkit.env)


def test_a_wrong_setting_is_a_clear_error(image_env, monkeypatch, tmp_path):
    monkeypatch.setenv(CANN_PYTHON_VAR, str(tmp_path / "missing" / "python3"))
    with pytest.raises(ToolchainNotFound, match=CANN_PYTHON_VAR):
        tools_base_env()
    with pytest.raises(ToolchainNotFound, match=CANN_PYTHON_VAR):
        load_set_env(fake_toolkit(tmp_path / "ascend-toolkit") / "set_env.sh")
