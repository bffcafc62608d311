"""Write the two pinned environments from the current .venv, and the wheel record of the runtime one.

    python scripts/locks.py split     # requirements.lock (runtime) + requirements-dev.lock (tests, tools)
    python scripts/locks.py wheels    # requirements.wheels.json (needs PyPI; pip's own resolver)

split: the runtime lock is everything that the project's `dependencies` and its build backend
(pyproject.toml) need, transitively, as installed in this venv, minus torch (installed first,
from the CPU index) and the project itself; torch's own requirements are walked through and
kept. The dev lock is what the `test` and `train` extras need on top of that. A package that
neither needs is reported and left out. Versions are the installed ones (install what you
added to pyproject.toml by hand first).

wheels: for each image platform (CPython 3.11 at the oldest patch every package accepts,
manylinux for IMAGE_GLIBC, each of ARCHES), pip resolves the runtime lock with
`--only-binary=:all: --platform ... --dry-run --report`, and the record keeps, per package, the
wheel file it would install (or pip's error when there is none). tests/deploy/test_locks.py
checks the record offline against the lock and the platforms' tags.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
WHEEL_RECORD = REPO / "requirements.wheels.json"
NOT_LOCKED = {"torch", "cgan-airflow", "pip", "wheel"}
# The images' platforms: the Airflow image (Debian bookworm, glibc 2.36) and the CANN images
# (openEuler 22.03, glibc 2.34; Ubuntu 22.04, glibc 2.35), each on x86_64 and aarch64.
# The oldest glibc of them bounds what a wheel may need.
IMAGE_GLIBC = (2, 34)
ARCHES = ("x86_64", "aarch64")
PYTHON = "311"

RUNTIME_HEADER = """\
# Runtime environment of the project and of both images (Python 3.11, x86_64 or aarch64, glibc >= 2.34).
# torch==2.13.0 (CPU build) is installed first, on its own; it is not listed here.
# Images install this file as pip constraints and fail on `pip check`; make install adds requirements-dev.lock.
# Regenerate: make lock   (scripts/locks.py split, then scripts/locks.py wheels)
"""
DEV_HEADER = """\
# Tests, benchmarks and tools (make install / make test / make bench), never in an image.
# Installed after requirements.lock with --no-deps. Regenerate: make lock
"""


def installed() -> dict[str, metadata.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}


def closure(roots: list[str], dists: dict[str, metadata.Distribution]) -> set[str]:
    """Every installed distribution that `roots` need, following markers and extras."""
    base: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name, extras = canonicalize_name(req.name), frozenset(req.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = dists.get(name)
        if dist is None:
            raise SystemExit(f"{req} is needed but not installed in this venv: run make install first")
        for text in dist.requires or ():
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate(base | {"extra": e}) for e in ("", *extras)):
                todo.append(sub)
    return {name for name, _ in seen}


def split() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    dists = installed()
    # the images install the project with --no-build-isolation: its build backend is runtime too
    runtime = closure(project["dependencies"] + pyproject["build-system"]["requires"], dists)
    extras = project.get("optional-dependencies", {})
    dev = closure([r for group in ("test", "train") for r in extras.get(group, [])], dists) - runtime
    for path, names, header in ((RUNTIME_LOCK, runtime, RUNTIME_HEADER), (DEV_LOCK, dev, DEV_HEADER)):
        pins = sorted(f"{dists[n].metadata['Name']}=={dists[n].version}" for n in names - NOT_LOCKED)
        path.write_text(header + "".join(p + "\n" for p in sorted(pins, key=str.lower)))
        print(f"{path.name}: {len(pins)} packages")
    stray = set(dists) - runtime - dev - NOT_LOCKED
    if stray:
        print(f"installed but needed by neither lock (left out): {', '.join(sorted(stray))}")


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def min_python(names: set[str] | None = None) -> str:
    """The oldest Python 3.11.x that every runtime package's Requires-Python accepts (installed
    metadata): the images' Python must be at least this (docker/ascend-worker.Dockerfile checks)."""
    dists = installed()
    names = set(read_lock(RUNTIME_LOCK)) if names is None else names
    found = [_requires_python(dists[n]) for n in names if n in dists]
    specs = [SpecifierSet(spec) for spec in found if spec]
    for patch in range(0, 40):
        version = f"3.{PYTHON[1:]}.{patch}"
        if all(spec.contains(version) for spec in specs):
            return version
    raise SystemExit("no Python 3.11.x satisfies every Requires-Python of the runtime lock")


def _requires_python(dist: metadata.Distribution) -> str | None:
    """Requires-Python of an installed distribution, None when it has none (importlib_metadata's
    Message raises KeyError for a missing field where the stdlib's returns None)."""
    try:
        return dist.metadata["Requires-Python"]
    except KeyError:
        return None


def _pip_pick(arch: str, reqs: list[str], tmp: Path, python: str) -> tuple[dict[str, str] | None, str]:
    """({name: wheel file} or None, pip's last error line) for `reqs` on one image platform."""
    report = tmp / "report.json"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed",
           "--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", f"cp{PYTHON}"]
    # pip's --platform takes exact tags: the older manylinux ones are listed too
    for minor in range(IMAGE_GLIBC[1], 16, -1):
        cmd += ["--platform", f"manylinux_2_{minor}_{arch}"]
    cmd += ["--platform", f"manylinux2014_{arch}", "--platform", "any",
            "--target", str(tmp / "target"), "--report", str(report), *reqs]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
    picked: dict[str, str] = {}
    for item in json.loads(report.read_text())["install"]:
        url = item["download_info"]["url"]
        picked[canonicalize_name(item["metadata"]["name"])] = url.rsplit("/", 1)[-1].split("#", 1)[0]
    return picked, ""


def wheels() -> None:
    """The wheel pip picks for every pinned package on every image platform."""
    pins = read_lock(RUNTIME_LOCK)
    reqs = [f"{name}=={version}" for name, version in sorted(pins.items())]
    python = min_python()
    platforms: dict[str, dict[str, str]] = {}
    record = {"python": f"cp{PYTHON}", "python_version": python, "glibc": ".".join(map(str, IMAGE_GLIBC)),
              "platforms": platforms}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for arch in ARCHES:
            files: dict[str, str] = {}
            todo = list(reqs)
            while todo:  # pip names the first requirement without a wheel: record it, go on without it
                picked, error = _pip_pick(arch, todo, tmp, python)
                if picked is not None:
                    files.update(picked)
                    break
                missing = re.search(r"No matching distribution found for ([A-Za-z0-9_.\-]+)==", error)
                if missing is None:
                    raise SystemExit(f"{arch}: pip failed: {error}")
                name = canonicalize_name(missing.group(1))
                files[name] = f"ERROR: {error}"
                print(f"{arch}: no wheel: {error}", flush=True)
                todo = [r for r in todo if canonicalize_name(r.split("==")[0]) != name]
            platforms[arch] = dict(sorted(files.items()))
            print(f"{arch}: {sum(not f.startswith('ERROR') for f in files.values())}/{len(reqs)} wheels", flush=True)
    WHEEL_RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    bad = [f"{a} {n}" for a, f in platforms.items() for n, w in f.items() if w.startswith("ERROR")]
    print(f"{WHEEL_RECORD.name} written" + (f"; NO WHEEL for: {', '.join(bad)}" if bad else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("split", "wheels"))
    args = parser.parse_args(argv)
    {"split": split, "wheels": wheels}[args.command]()


if __name__ == "__main__":
    main()
