"""The CANN toolkit: its environment (from set_env.sh), the atc it holds, and its version.

set_env.sh is sourced without handing user text to a shell: the path travels as a positional
argument of a fixed script, `bash -c 'source "$1" >/dev/null && env -0' _ <path>`, and the
NUL-separated environment it prints is parsed here.

The version, part of the conversion cache key, is read from (first found):
  <home>/latest/<arch>-linux/ascend_toolkit_install.info   `version=` (CANN <= 8.x layout)
  <home>/<arch>-linux/ascend_toolkit_install.info          (home is a versioned install dir)
  $ASCEND_TOOLKIT_HOME/<arch>-linux/ascend_toolkit_install.info (as set by set_env.sh)
  <home>/latest/version.cfg                                 its `*version*=` lines
then the first line of `atc --version`, else "unknown".

CANN's Python: atc compiles operators with the `python3` on PATH and the packages CANN pins
(numpy, protobuf, ...). Where CGAN_ASCEND_PYTHON names that interpreter (the Ascend image sets
it), the tools' environment has its folder first on PATH and no trace of this project's venv
(its bin folder, VIRTUAL_ENV, PYTHONHOME), so the venv's numpy/protobuf never reach atc or msame.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cgan.ascend.errors import ToolchainNotFound
from cgan.ascend.validate import check_path

DEFAULT_TOOLKIT_HOME = Path("/usr/local/Ascend/ascend-toolkit")
SET_ENV_NAME = "set_env.sh"
SOURCE_SCRIPT = 'source "$1" >/dev/null && env -0'
INFO_NAME = "ascend_toolkit_install.info"
CANN_PYTHON_VAR = "CGAN_ASCEND_PYTHON"


@dataclass
class Toolkit:
    atc: str
    env: dict[str, str]
    version: str
    version_source: str
    home: Path | None = None
    notes: list[str] = field(default_factory=list)


def tools_base_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that atc and msame start from: `environ` (default os.environ), and where
    CGAN_ASCEND_PYTHON is set, CANN's Python first on PATH and the project's venv removed."""
    env = dict(os.environ if environ is None else environ)
    python = env.get(CANN_PYTHON_VAR, "").strip()
    if not python:
        return env
    path = check_path(python, CANN_PYTHON_VAR)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ToolchainNotFound(f"{CANN_PYTHON_VAR}={python} is not an executable file: set it to the "
                                "python3 of the CANN image (the one its toolkit's packages are installed for)")
    venvs = {Path(p).resolve() for p in (env.pop("VIRTUAL_ENV", None), sys.prefix) if p}
    venvs.discard(Path(sys.base_prefix).resolve())
    env.pop("PYTHONHOME", None)

    def outside(entry: str) -> bool:
        return not any(Path(entry).resolve().is_relative_to(v) for v in venvs)

    for var in ("PATH", "PYTHONPATH"):
        kept = [e for e in env.get(var, "").split(os.pathsep) if e and outside(e)]
        if var == "PATH":
            kept.insert(0, str(path.parent))
        if kept:
            env[var] = os.pathsep.join(kept)
        else:
            env.pop(var, None)
    return env


def load_set_env(set_env: str | os.PathLike, base_env: dict[str, str] | None = None,
                 timeout_s: float = 60) -> dict[str, str]:
    """The environment after `source set_env.sh`, as a dict (no user text in any shell code)."""
    path = check_path(set_env, "set_env.sh")
    if not path.is_file():
        raise _missing(path)
    bash = shutil.which("bash") or "/bin/bash"
    try:
        proc = subprocess.run(
            [bash, "-c", SOURCE_SCRIPT, "cgan-set-env", str(path)], shell=False,
            env=tools_base_env() if base_env is None else dict(base_env), capture_output=True,
            timeout=timeout_s, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolchainNotFound(f"sourcing {path} failed: {exc}") from exc
    if proc.returncode != 0:
        raise ToolchainNotFound(
            f"sourcing {path} failed (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()[-500:] or 'no message'}"
        )
    env = {}
    for item in proc.stdout.split(b"\0"):
        if b"=" in item:
            key, _, value = item.decode(errors="replace").partition("=")
            env[key] = value
    env.pop("_", None)
    return env


def _missing(path: Path) -> ToolchainNotFound:
    return ToolchainNotFound(
        f"CANN set_env.sh not found at {path}: install the CANN toolkit there, point "
        "--toolkit-home (toolkit_home) at the folder holding set_env.sh, or allow the atc on "
        "PATH (--atc-from-path / atc_from_path=True) on a host whose environment is set up"
    )


def _read_kv(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            out[key.strip().lower()] = value.strip()
    return out


def version_candidates(home: Path | None, env: dict[str, str]) -> list[Path]:
    roots = []
    if home is not None:
        roots += [home / "latest", home]
    for var in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"):
        if env.get(var):
            roots.append(Path(env[var]))
    found = []
    for root in roots:
        found += sorted(root.glob(f"*-linux/{INFO_NAME}"))
    if home is not None:
        found.append(home / "latest" / "version.cfg")
    return found


def read_toolkit_version(home: Path | None, env: dict[str, str], atc: str | None = None) -> tuple[str, str]:
    """(version, where it was read). Never raises: the last resort is ("unknown", "none")."""
    for path in version_candidates(home, env):
        if not path.is_file():
            continue
        values = _read_kv(path)
        if "version" in values:
            inner = values.get("innerversion")
            return (f"{values['version']} ({inner})" if inner else values["version"]), str(path)
        versions = [f"{k}={v}" for k, v in sorted(values.items()) if "version" in k]
        if versions:
            return "; ".join(versions), str(path)
    if atc:
        try:
            proc = subprocess.run([atc, "--version"], shell=False, env=env, capture_output=True,
                                  timeout=60, stdin=subprocess.DEVNULL)
            first = next((ln.strip() for ln in proc.stdout.decode(errors="replace").splitlines()
                          if ln.strip()), "")
            if proc.returncode == 0 and first and any(c.isdigit() for c in first):
                return first, f"{atc} --version"
        except (OSError, subprocess.SubprocessError):
            pass
    return "unknown", "none"


def runtime_env(toolkit_home: str | os.PathLike | None = None) -> tuple[dict[str, str], str]:
    """The environment for msame: set_env.sh's when it exists (msame needs the ACL libraries on
    LD_LIBRARY_PATH), else the current one. Returns (env, where it came from)."""
    home = check_path(toolkit_home or DEFAULT_TOOLKIT_HOME, "toolkit home")
    set_env = home / SET_ENV_NAME
    if set_env.is_file():
        return load_set_env(set_env), f"environment from {set_env}"
    return tools_base_env(), f"{set_env} not found; the current environment is used"


def locate_toolkit(toolkit_home: str | os.PathLike | None = None, *, atc_from_path: bool = False) -> Toolkit:
    """The toolkit's atc and environment: set_env.sh under toolkit_home (default
    /usr/local/Ascend/ascend-toolkit); when it is missing and atc_from_path is set, the atc on
    the current PATH with the current environment."""
    home = check_path(toolkit_home or DEFAULT_TOOLKIT_HOME, "toolkit home")
    set_env = home / SET_ENV_NAME
    notes = []
    if set_env.is_file():
        env = load_set_env(set_env)
        notes.append(f"environment from {set_env}")
    elif atc_from_path:
        env = tools_base_env()
        notes.append(f"{set_env} not found; using the atc on PATH with the current environment")
    else:
        raise _missing(set_env)
    atc = shutil.which("atc", path=env.get("PATH", ""))
    if atc is None:
        raise ToolchainNotFound(
            f"atc not found on PATH after {notes[0]}: is the CANN toolkit (not only the NNRT "
            "runtime) installed?"
        )
    version, source = read_toolkit_version(home, env, atc)
    return Toolkit(atc=atc, env=env, version=version, version_source=source, home=home, notes=notes)
