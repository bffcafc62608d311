"""The CANN layout is found, not assumed (cgan/ascend/toolkit.py find_toolkit_home, the version).

Two layouts, as fake toolkit folders built from the published ones:
  CANN 8.5+   /usr/local/Ascend/cann -> cann-8.5.0, set_env.sh in it, the version in
              cann/<arch>-linux/ascend_toolkit_install.info (hiascend CANN 8.5 install guide, "File
              Paths") and share/info/runtime/version.info `Version=` (what ACL itself reads)
  older       /usr/local/Ascend/ascend-toolkit with latest -> <version>, set_env.sh beside latest,
              latest/<arch>-linux/ascend_toolkit_install.info
The roots searched are parameters, so the fakes live in tmp folders.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from cgan.ascend.errors import ToolchainNotFound
from cgan.ascend.toolkit import (
    CANN_HOMES,
    TOOLKIT_VAR,
    find_toolkit_home,
    locate_toolkit,
    read_toolkit_version,
    runtime_env,
)
from tests.standins.fixtures import STANDINS

ARCH = platform.machine()
INFO_85 = ("package_name=Ascend-cann-toolkit\nversion=8.5.0\ninnerversion=V100R001C25SPC001B212\n"
           "compatible_version=[V100R001C15],[V100R001C18]\narch={arch}\nos=linux\npath={path}\n")


def set_env_text(real: Path) -> str:
    return (f'export ASCEND_TOOLKIT_HOME="{real}"\nexport ASCEND_HOME_PATH="{real}"\n'
            f'export ASCEND_OPP_PATH="{real}/opp"\nexport LD_LIBRARY_PATH="{real}/lib64:$LD_LIBRARY_PATH"\n'
            f'export PATH="{STANDINS}:$PATH"\n')


def cann_85(ascend: Path, *, info: bool = True, runtime_info: bool = True) -> Path:
    """<ascend>/cann -> cann-8.5.0 with set_env.sh and the version files of CANN 8.5."""
    real = ascend / "cann-8.5.0"
    (real / f"{ARCH}-linux").mkdir(parents=True)
    if info:
        (real / f"{ARCH}-linux" / "ascend_toolkit_install.info").write_text(
            INFO_85.format(arch=ARCH, path=real / f"{ARCH}-linux"))
    if runtime_info:
        (real / "share" / "info" / "runtime").mkdir(parents=True)
        (real / "share" / "info" / "runtime" / "version.info").write_text(
            "Version=8.5.0\nversion_dir=cann-8.5.0\ntimestamp=20251230_000000000\n")
    (ascend / "cann").symlink_to("cann-8.5.0")
    (real / "set_env.sh").write_text(set_env_text(ascend / "cann"))
    return ascend / "cann"


def ascend_toolkit(ascend: Path, version: str = "8.2.RC1") -> Path:
    """<ascend>/ascend-toolkit with latest -> <version>, as CANN up to 8.3 installs it."""
    home = ascend / "ascend-toolkit"
    info = home / version / f"{ARCH}-linux" / "ascend_toolkit_install.info"
    info.parent.mkdir(parents=True)
    info.write_text(f"package_name=Ascend-cann-toolkit\nversion={version}\ninnerversion=V100R001C21B001\n")
    (home / "latest").symlink_to(version)
    (home / "set_env.sh").write_text(set_env_text(home / "latest"))
    return home


def host_env() -> dict[str, str]:
    """This process's environment (PATH with python3 for the stand-in atc), no override."""
    return {k: v for k, v in os.environ.items() if k != TOOLKIT_VAR}


def roots(ascend: Path) -> tuple[Path, Path]:
    return ascend / "cann", ascend / "ascend-toolkit"


def test_the_default_homes_are_both_layouts_newest_first():
    assert CANN_HOMES == (Path("/usr/local/Ascend/cann"), Path("/usr/local/Ascend/ascend-toolkit"))


def test_cann_85_layout_is_found_and_its_version_read(tmp_path, clean_env, calls):
    """Before: the default home was /usr/local/Ascend/ascend-toolkit only; a CANN 8.5 host (no
    ascend-toolkit/) failed with "set_env.sh not found"."""
    home = cann_85(tmp_path / "Ascend")
    assert find_toolkit_home(environ={}, roots=roots(tmp_path / "Ascend")) == home
    toolkit = locate_toolkit(environ=host_env(), roots=roots(tmp_path / "Ascend"))
    assert toolkit.home == home and toolkit.atc == str(STANDINS / "atc")
    assert toolkit.version == "8.5.0 (V100R001C25SPC001B212)"
    assert toolkit.version_source == str(home / f"{ARCH}-linux" / "ascend_toolkit_install.info")
    assert any(str(home / "set_env.sh") in n for n in toolkit.notes)


def test_older_layout_is_found_and_its_version_read(tmp_path, clean_env):
    home = ascend_toolkit(tmp_path / "Ascend")
    toolkit = locate_toolkit(environ=host_env(), roots=roots(tmp_path / "Ascend"))
    assert toolkit.home == home and toolkit.version == "8.2.RC1 (V100R001C21B001)"
    assert toolkit.version_source == str(home / "latest" / f"{ARCH}-linux" / "ascend_toolkit_install.info")


def test_cann_first_when_both_are_there(tmp_path, clean_env):
    """A CANN 8.5 image keeps an ascend-toolkit/set_env.sh too (Ascend/cann-container-image):
    cann/ is taken, the newer layout."""
    cann_85(tmp_path / "Ascend")
    ascend_toolkit(tmp_path / "Ascend", "8.3.RC1")
    assert find_toolkit_home(environ={}, roots=roots(tmp_path / "Ascend")) == tmp_path / "Ascend" / "cann"


def test_version_from_the_runtime_version_info(tmp_path, clean_env):
    """A cann layout whose install.info is missing still has a real version: ACL's own
    share/info/runtime/version.info. Before: "unknown" (only install.info and
    latest/version.cfg were read)."""
    home = cann_85(tmp_path / "Ascend", info=False)
    version, source = read_toolkit_version(home, {}, None)
    assert (version, source) == ("8.5.0", str(home / "share" / "info" / "runtime" / "version.info"))


def test_version_from_set_env_when_the_home_is_the_old_name(tmp_path, clean_env):
    """A CANN 8.5 image's ascend-toolkit/set_env.sh sets ASCEND_TOOLKIT_HOME=.../cann-8.5.0: the
    version is read there when ascend-toolkit/ itself holds no version file."""
    cann_85(tmp_path / "Ascend")
    compat = tmp_path / "Ascend" / "ascend-toolkit"
    compat.mkdir()
    (compat / "set_env.sh").write_text(set_env_text(tmp_path / "Ascend" / "cann-8.5.0"))
    toolkit = locate_toolkit(compat, environ=host_env())
    assert toolkit.version == "8.5.0 (V100R001C25SPC001B212)"
    assert toolkit.version_source.startswith(str(tmp_path / "Ascend" / "cann-8.5.0"))


def test_this_hosts_arch_is_read_first(tmp_path, clean_env):
    home = cann_85(tmp_path / "Ascend", runtime_info=False)
    other = "aarch64" if ARCH != "aarch64" else "x86_64"
    (home / f"{other}-linux").mkdir()
    (home / f"{other}-linux" / "ascend_toolkit_install.info").write_text("version=0.0.1\n")
    assert read_toolkit_version(home, {})[0] == "8.5.0 (V100R001C25SPC001B212)"


def test_nothing_found_names_every_place_and_the_override(tmp_path, clean_env):
    with pytest.raises(ToolchainNotFound) as info:
        find_toolkit_home(environ={}, roots=roots(tmp_path / "Ascend"))
    text = str(info.value)
    for root in roots(tmp_path / "Ascend"):
        assert str(root / "set_env.sh") in text
    assert TOOLKIT_VAR in text and "--toolkit-home" in text and "--atc-from-path" in text
    with pytest.raises(ToolchainNotFound):
        locate_toolkit(environ=host_env(), roots=roots(tmp_path / "Ascend"))


def test_the_override_wins_and_must_hold_set_env(tmp_path, clean_env):
    cann_85(tmp_path / "Ascend")
    other = ascend_toolkit(tmp_path / "elsewhere")
    assert find_toolkit_home(environ={TOOLKIT_VAR: str(other)}, roots=roots(tmp_path / "Ascend")) == other
    with pytest.raises(ToolchainNotFound) as info:
        find_toolkit_home(environ={TOOLKIT_VAR: str(tmp_path / "typo")}, roots=roots(tmp_path / "Ascend"))
    text = str(info.value)
    assert f"{TOOLKIT_VAR}={tmp_path / 'typo'}" in text and str(tmp_path / "typo" / "set_env.sh") in text
    assert "unset it" in text
    # a wrong override is an error even where a missing toolkit would fall back
    with pytest.raises(ToolchainNotFound, match=TOOLKIT_VAR):
        runtime_env(environ={TOOLKIT_VAR: str(tmp_path / "typo")}, roots=roots(tmp_path / "Ascend"))
    with pytest.raises(ToolchainNotFound, match=TOOLKIT_VAR):
        locate_toolkit(atc_from_path=True, environ={TOOLKIT_VAR: str(tmp_path / "typo")},
                       roots=roots(tmp_path / "Ascend"))
    # an explicit folder wins over both
    assert find_toolkit_home(other, environ={TOOLKIT_VAR: str(tmp_path / "typo")}) == other


def test_empty_override_means_found(tmp_path, clean_env):
    home = cann_85(tmp_path / "Ascend")
    assert find_toolkit_home(environ={TOOLKIT_VAR: " "}, roots=roots(tmp_path / "Ascend")) == home


def test_msame_environment_from_the_found_toolkit(tmp_path, clean_env):
    home = cann_85(tmp_path / "Ascend")
    env, where = runtime_env(environ={"PATH": "/usr/bin:/bin"}, roots=roots(tmp_path / "Ascend"))
    assert env["LD_LIBRARY_PATH"].startswith(f"{home}/lib64") and str(home / "set_env.sh") in where
    env, where = runtime_env(environ={"PATH": "/usr/bin:/bin"}, roots=roots(tmp_path / "none"))
    assert "not found" in where and str(tmp_path / "none" / "cann" / "set_env.sh") in where
    assert "LD_LIBRARY_PATH" not in env


def test_settings_default_is_found_on_the_worker(monkeypatch):
    """Before: cgan.settings.ascend_toolkit() returned /usr/local/Ascend/ascend-toolkit when
    unset, and the DAG passed that to the worker as an explicit folder (a CANN 8.5 worker failed)."""
    from cgan import settings

    monkeypatch.delenv(TOOLKIT_VAR, raising=False)
    assert settings.ascend_toolkit() is None
    monkeypatch.setenv(TOOLKIT_VAR, "/opt/cann")
    assert settings.ascend_toolkit() == "/opt/cann"


def test_cli_and_operators_default_to_found():
    import inspect

    from cgan.cli import build_parser

    parser = build_parser()
    for command in (["convert", "--onnx", "x.onnx", "--soc-version", "Ascend310P3", "--out", "o"],):
        assert parser.parse_args(command).toolkit_home is None
    pytest.importorskip("airflow")
    from operators.ascend_inference import AscendInferenceOperator
    from operators.atc_convert import AtcConvertOperator

    for op in (AtcConvertOperator, AscendInferenceOperator):
        assert inspect.signature(op.__init__).parameters["toolkit_home"].default is None
