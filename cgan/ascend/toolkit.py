"""The CANN toolkit: where it is, its environment (from set_env.sh), the atc it holds, its version.

Where (find_toolkit_home): an explicit folder (--toolkit-home, toolkit_home=), else the
CGAN_ASCEND_TOOLKIT override, else the first of CANN_HOMES holding set_env.sh:
  /usr/local/Ascend/cann            CANN 8.5+ (`cann` a link to the versioned `cann-8.5.0`;
                                     hiascend CANN 8.5 install guide, File Paths; asc-devkit docs
                                     `source /usr/local/Ascend/cann/set_env.sh`)
  /usr/local/Ascend/ascend-toolkit  CANN <= 8.3 (`latest` a link to the version folder), and kept
                                     by CANN 8.5+ images as a second entry (Ascend/cann-container-
                                     image: ENTRYPOINT sources ascend-toolkit/set_env.sh, which sets
                                     ASCEND_TOOLKIT_HOME=/usr/local/Ascend/cann-8.5.0)

set_env.sh is sourced without handing user text to a shell: the path travels as a positional
argument of a fixed script, `bash -c 'source "$1" >/dev/null && env -0' _ <path>`, and the
NUL-separated environment it prints is parsed here.

The version, part of the conversion cache key, is read from (first found; the file it came from
is recorded, Toolkit.version_source), <arch> this host's first:
  <home>/latest/<arch>-linux/ascend_toolkit_install.info   `version=` (ascend-toolkit layout)
  <home>/<arch>-linux/ascend_toolkit_install.info          (cann layout: /usr/local/Ascend/cann/...)
  $ASCEND_TOOLKIT_HOME, $ASCEND_HOME_PATH /<arch>-linux/ascend_toolkit_install.info (set_env.sh's)
  <home>/latest, <home>, $ASCEND_TOOLKIT_HOME, $ASCEND_HOME_PATH /share/info/runtime/version.info
                                                            `Version=` (what ACL's own
                                                            aclsysGetCANNVersion reads)
  <home>/latest/version.cfg, <home>/version.cfg             its `*version*=` lines
then the first line of `atc --version`, else "unknown" (the conversion cache then refuses to
cache: cgan.ascend.atc_cache).

CANN's Python: atc compiles operators with the `python3` on PATH and the packages CANN pins
(numpy, protobuf, ...). Where CGAN_ASCEND_PYTHON names that interpreter (the Ascend image sets
it), the tools' environment has its folder first on PATH and no trace of this project's venv
(its bin folder, VIRTUAL_ENV, PYTHONHOME), so the venv's numpy/protobuf never reach atc or msame.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cgan.ascend.errors import ToolchainNotFound
from cgan.ascend.validate import check_path

# Where the toolkit is looked for when neither a folder nor CGAN_ASCEND_TOOLKIT names it, in order.
CANN_HOMES: tuple[Path, ...] = (Path("/usr/local/Ascend/cann"), Path("/usr/local/Ascend/ascend-toolkit"))
TOOLKIT_VAR = "CGAN_ASCEND_TOOLKIT"
SET_ENV_NAME = "set_env.sh"
UNKNOWN_VERSION = "unknown"
RUNTIME_VERSION_INFO = Path("share/info/runtime/version.info")
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


def tools_base_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
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


class ToolkitNotFound(ToolchainNotFound):
    """No set_env.sh where the toolkit was looked for (`looked`: the set_env.sh paths tried)."""

    def __init__(self, message: str, looked: list[Path]):
        super().__init__(message)
        self.looked = looked


def _override_missing(value: str, set_env: Path) -> ToolkitNotFound:
    return ToolkitNotFound(
        f"{TOOLKIT_VAR}={value} is set but there is no {SET_ENV_NAME} at {set_env}: set {TOOLKIT_VAR} to "
        f"the folder that holds {SET_ENV_NAME} (CANN 8.5+: {CANN_HOMES[0]}; older CANN: {CANN_HOMES[-1]}), "
        f"or unset it so that the toolkit is found in {' or '.join(map(str, CANN_HOMES))}", [set_env])


def _find_home(toolkit_home: str | os.PathLike | None, environ: Mapping[str, str] | None,
               roots: tuple[Path, ...] | list[Path]) -> tuple[Path, str]:
    if toolkit_home:
        home = check_path(toolkit_home, "toolkit home")
        if not (home / SET_ENV_NAME).is_file():
            raise ToolkitNotFound(str(_missing(home / SET_ENV_NAME)), [home / SET_ENV_NAME])
        return home, "given"
    env = os.environ if environ is None else environ
    value = (env.get(TOOLKIT_VAR) or "").strip()
    if value:
        home = check_path(value, TOOLKIT_VAR)
        if not (home / SET_ENV_NAME).is_file():
            raise _override_missing(value, home / SET_ENV_NAME)
        return home, f"from {TOOLKIT_VAR}"
    looked = [Path(root) / SET_ENV_NAME for root in roots]
    for set_env in looked:
        if set_env.is_file():
            return set_env.parent, f"found (first of {', '.join(str(r) for r in roots)} with {SET_ENV_NAME})"
    raise ToolkitNotFound(
        f"CANN toolkit not found: no {SET_ENV_NAME} at {', '.join(map(str, looked))}, and {TOOLKIT_VAR} is "
        f"not set. Install the CANN toolkit (CANN 8.5+ installs to {CANN_HOMES[0]}, older CANN to "
        f"{CANN_HOMES[-1]}), set {TOOLKIT_VAR} (or --toolkit-home / toolkit_home) to the folder holding "
        f"{SET_ENV_NAME}, or allow the atc on PATH (--atc-from-path / atc_from_path=True / "
        "CGAN_ATC_FROM_PATH=true) on a host whose environment is set up", looked)


def find_toolkit_home(toolkit_home: str | os.PathLike | None = None, *, environ: Mapping[str, str] | None = None,
                      roots: tuple[Path, ...] | list[Path] = CANN_HOMES) -> Path:
    """The CANN toolkit home, the folder holding set_env.sh: `toolkit_home` when given (it must
    hold set_env.sh), else CGAN_ASCEND_TOOLKIT from `environ` (default os.environ) when set (an
    override: it must hold set_env.sh), else the first of `roots` (default CANN_HOMES:
    /usr/local/Ascend/cann, then /usr/local/Ascend/ascend-toolkit) that holds it. Raises
    ToolkitNotFound (a ToolchainNotFound) naming every place looked and how to fix it."""
    return _find_home(toolkit_home, environ, roots)[0]


def _read_kv(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            out[key.strip().lower()] = value.strip()
    return out


def _host_arch_first(paths: list[Path]) -> list[Path]:
    machine = platform.machine()
    return sorted(paths, key=lambda p: (not p.parent.name.startswith(f"{machine}-"), str(p)))


def version_candidates(home: Path | None, env: dict[str, str]) -> list[Path]:
    """The version files read_toolkit_version tries, in order (see the module's docstring)."""
    roots = []
    if home is not None:
        roots += [home / "latest", home]
    for var in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"):
        if env.get(var):
            roots.append(Path(env[var]))
    found = []
    for root in roots:
        found += _host_arch_first(list(root.glob(f"*-linux/{INFO_NAME}")))
    found += [root / RUNTIME_VERSION_INFO for root in roots]
    if home is not None:
        found += [home / "latest" / "version.cfg", home / "version.cfg"]
    return list(dict.fromkeys(found))


def read_toolkit_version(home: Path | None, env: dict[str, str], atc: str | None = None) -> tuple[str, str]:
    """(version, where it was read). Never raises: the last resort is ("unknown", "none")."""
    for path in version_candidates(home, env):
        if not path.is_file():
            continue
        values = _read_kv(path)
        if values.get("version"):
            inner = values.get("innerversion")
            return (f"{values['version']} ({inner})" if inner else values["version"]), str(path)
        versions = [f"{k}={v}" for k, v in sorted(values.items()) if "version" in k and v]
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
    return UNKNOWN_VERSION, "none"


def runtime_env(toolkit_home: str | os.PathLike | None = None, *, environ: Mapping[str, str] | None = None,
                roots: tuple[Path, ...] | list[Path] = CANN_HOMES) -> tuple[dict[str, str], str]:
    """The environment for msame (and the ais_bench checks): set_env.sh's of the toolkit home
    (find_toolkit_home: `toolkit_home`, else CGAN_ASCEND_TOOLKIT, else found) when there is one
    (msame needs the ACL libraries on LD_LIBRARY_PATH), else the current one. Returns (env, where
    it came from). A CGAN_ASCEND_TOOLKIT without set_env.sh is an error, not a fallback."""
    env_vars = os.environ if environ is None else environ
    try:
        home, how = _find_home(toolkit_home, env_vars, roots)
    except ToolkitNotFound as exc:
        if not toolkit_home and (env_vars.get(TOOLKIT_VAR) or "").strip():
            raise
        looked = " or ".join(map(str, exc.looked))
        return tools_base_env(dict(env_vars)), f"{SET_ENV_NAME} not found at {looked}; the current environment is used"
    set_env = home / SET_ENV_NAME
    return load_set_env(set_env, tools_base_env(dict(env_vars))), f"environment from {set_env} ({how})"


def locate_toolkit(toolkit_home: str | os.PathLike | None = None, *, atc_from_path: bool = False,
                   environ: Mapping[str, str] | None = None,
                   roots: tuple[Path, ...] | list[Path] = CANN_HOMES) -> Toolkit:
    """The toolkit's atc, environment and version: set_env.sh of the toolkit home
    (find_toolkit_home: `toolkit_home`, else CGAN_ASCEND_TOOLKIT, else the first of
    /usr/local/Ascend/cann and /usr/local/Ascend/ascend-toolkit holding it); when there is none
    and atc_from_path is set, the atc on the current PATH with the current environment (a
    CGAN_ASCEND_TOOLKIT without set_env.sh stays an error)."""
    env_vars = os.environ if environ is None else environ
    notes = []
    home: Path | None
    try:
        home, how = _find_home(toolkit_home, env_vars, roots)
    except ToolkitNotFound as exc:
        overridden = not toolkit_home and (env_vars.get(TOOLKIT_VAR) or "").strip()
        if not atc_from_path or overridden:
            raise
        home = check_path(toolkit_home, "toolkit home") if toolkit_home else None
        env = tools_base_env(dict(env_vars))
        looked = " or ".join(map(str, exc.looked))
        notes.append(f"{SET_ENV_NAME} not found at {looked}; using the atc on PATH with the current environment")
    else:
        set_env = home / SET_ENV_NAME
        env = load_set_env(set_env, tools_base_env(dict(env_vars)))
        notes.append(f"environment from {set_env} ({how})")
    atc = shutil.which("atc", path=env.get("PATH", ""))
    if atc is None:
        raise ToolchainNotFound(
            f"atc not found on PATH after {notes[0]}: is the CANN toolkit (not only the NNRT "
            "runtime) installed?"
        )
    version, source = read_toolkit_version(home, env, atc)
    if version == UNKNOWN_VERSION:
        notes.append(f"toolkit version unknown: none of {', '.join(map(str, version_candidates(home, env)))} "
                     "holds a version and `atc --version` printed none")
    return Toolkit(atc=atc, env=env, version=version, version_source=source, home=home, notes=notes)


DRIVER_VERSION_FILE = Path("/usr/local/Ascend/driver/version.info")


def inference_host_versions(env: Mapping[str, str],
                            driver_info: Path = DRIVER_VERSION_FILE) -> dict[str, str]:
    """What an om meets on the NPU host: the CANN the tool's environment loads (read as for atc,
    from ASCEND_TOOLKIT_HOME/ASCEND_HOME_PATH) and the driver (`Version=` of the driver's
    version.info, mounted read-only by compose). Either is "unknown" where it cannot be read.
    Recorded in perf.json's `tool`, beside the om's own CANN (the atc task's), so an om that
    fails to load after a host upgrade shows both."""
    cann, _ = read_toolkit_version(None, dict(env))
    driver = UNKNOWN_VERSION
    try:
        values = _read_kv(driver_info)
        driver = values.get("version") or values.get("innerversion") or UNKNOWN_VERSION
    except OSError:
        pass
    return {"host_cann_version": cann, "host_driver_version": driver}
