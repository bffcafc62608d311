"""Write the two pinned environments from the current .venv, and the wheel record of the runtime one.

    python scripts/locks.py split     # requirements.lock (runtime) + requirements-dev.lock (tests, tools)
    python scripts/locks.py wheels    # requirements.wheels.json, then hashes (needs PyPI; pip's own resolver)
    python scripts/locks.py hashes    # docker/requirements.hashes.lock from the record (offline)

split: the runtime lock is everything that the project's `dependencies` and its build backend
(pyproject.toml) need, transitively, as installed in this venv, minus torch (installed first,
from the CPU index) and the project itself; torch's own requirements are walked through and
kept. The dev lock is what the `test` and `train` extras need on top of that. A package that
neither needs is reported and left out. Versions are the installed ones (install what you
added to pyproject.toml by hand first).

wheels: for each image platform (CPython 3.11 at the oldest patch every package accepts,
manylinux for IMAGE_GLIBC, each of ARCHES), pip resolves the runtime lock with
`--only-binary=:all: --platform ... --dry-run --report`, and the record keeps, per package, the
wheel file it would install (or pip's error when there is none) and that file's sha256 as the
index states it (pip's report; pip checks a download against the same digest). pip runs with no
configuration file and against PyPI (--index-url), not this machine's local indexes, so the
digests are those of the files an image downloads. tests/deploy/test_locks.py checks the record
offline against the lock and the platforms' tags.

hashes: requirements.lock again, each pin followed by the sha256 of its wheel on every image
platform (`--hash=sha256:...`, one per distinct file), written to docker/requirements.hashes.lock
(docker/ is in the images' build context, .dockerignore). Both images install it with
`pip install --require-hashes --only-binary=:all: --no-deps -r`: a file whose digest differs, a
source package or a package the lock does not name stops the build. torch is not in it (the CPU
index, download.pytorch.org, is not what this script asks; the images install torch with --no-deps
after the lock, which pins its requirements).
"""

from __future__ import annotations

import argparse
import json
import os
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
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
WHEEL_RECORD = REPO / "requirements.wheels.json"
HASHED_LOCK = REPO / "docker" / "requirements.hashes.lock"
# Where the images download from; the record's digests are this index's.
INDEX_URL = "https://pypi.org/simple"
NOT_LOCKED = {"torch", "cgan-airflow", "pip", "wheel"}
# The images' platforms: the Airflow image (Debian bookworm, glibc 2.36) and the CANN images
# (openEuler 22.03, glibc 2.34; Ubuntu 22.04, glibc 2.35), each on x86_64 and aarch64.
# The oldest glibc of them bounds what a wheel may need.
IMAGE_GLIBC = (2, 34)
ARCHES = ("x86_64", "aarch64")
PYTHON = "311"

RUNTIME_HEADER = """\
# Runtime environment of the project and of both images (Python 3.11, x86_64 or aarch64, glibc >= 2.34).
# torch==2.13.0 (CPU build, from its own index) is not listed here; its requirements are.
# Images install this file hash-checked (docker/requirements.hashes.lock), torch with --no-deps,
# then the project with this file as constraints, and fail on `pip check`. make install adds requirements-dev.lock.
# Regenerate: make lock   (scripts/locks.py split, then scripts/locks.py wheels)
"""
HASHED_HEADER = """\
# requirements.lock with the sha256 of each package's wheel on the images' platforms (CPython 3.11,
# manylinux for glibc 2.34, x86_64 and aarch64: requirements.wheels.json). Both images install it with
#   pip install --require-hashes --only-binary=:all: --no-deps -r docker/requirements.hashes.lock
# torch (CPU index) is not in it. Generated, do not edit: make lock (scripts/locks.py wheels, then hashes)
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


def lock_pins(path: Path) -> list[str]:
    """The `Name==version` lines of a lock, as written."""
    return [line for line in (raw.split("#", 1)[0].strip() for raw in path.read_text().splitlines()) if line]


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lock_pins(path):
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


def _pip_env() -> dict[str, str]:
    """This environment for pip without any configuration file (PIP_CONFIG_FILE=os.devnull: no
    find-links, extra index or constraints of this machine) and without PIP_* settings but the
    certificate bundle and the timeout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _pip_pick(arch: str, reqs: list[str], tmp: Path, python: str,
              index_url: str) -> tuple[dict[str, tuple[str, str]] | None, str]:
    """({name: (wheel file, sha256)} or None, pip's last error line) for `reqs` on one image platform."""
    report = tmp / "report.json"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed",
           "--index-url", index_url,
           "--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", f"cp{PYTHON}"]
    # pip's --platform takes exact tags: the older manylinux ones are listed too
    for minor in range(IMAGE_GLIBC[1], 16, -1):
        cmd += ["--platform", f"manylinux_2_{minor}_{arch}"]
    cmd += ["--platform", f"manylinux2014_{arch}", "--platform", "any",
            "--target", str(tmp / "target"), "--report", str(report), *reqs]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_pip_env())
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
    picked: dict[str, tuple[str, str]] = {}
    for item in json.loads(report.read_text())["install"]:
        info = item["download_info"]
        url = info["url"]
        digest = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        if not url.startswith("https://") or not digest:
            raise SystemExit(f"{arch}: {url}: not an https download with a sha256 from the index")
        picked[canonicalize_name(item["metadata"]["name"])] = (url.rsplit("/", 1)[-1].split("#", 1)[0], digest)
    return picked, ""


def wheels(index_url: str = INDEX_URL) -> None:
    """The wheel pip picks for every pinned package on every image platform, and its sha256;
    then the hashed lock (hashes)."""
    pins = read_lock(RUNTIME_LOCK)
    reqs = [f"{name}=={version}" for name, version in sorted(pins.items())]
    python = min_python()
    platforms: dict[str, dict[str, str]] = {}
    digests: dict[str, str] = {}
    record = {"python": f"cp{PYTHON}", "python_version": python, "glibc": ".".join(map(str, IMAGE_GLIBC)),
              "index": index_url, "platforms": platforms, "sha256": digests}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for arch in ARCHES:
            files: dict[str, str] = {}
            todo = list(reqs)
            while todo:  # pip names the first requirement without a wheel: record it, go on without it
                picked, error = _pip_pick(arch, todo, tmp, python, index_url)
                if picked is not None:
                    for name, (wheel, digest) in picked.items():
                        files[name] = wheel
                        if digests.setdefault(wheel, digest) != digest:
                            raise SystemExit(f"{wheel}: two different sha256 from {index_url}")
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
    hashes()


def render_hashes(pins: list[str], record: dict) -> tuple[str, list[str]]:
    """(the hashed lock, its problems): each `Name==version` of `pins` with the sha256 of the wheel
    that `record` (requirements.wheels.json) holds for it on each image platform."""
    out, problems = [HASHED_HEADER], []
    for pin in pins:
        name, _, version = pin.partition("==")
        key, found = canonicalize_name(name), set()
        for arch in ARCHES:
            wheel = record["platforms"].get(arch, {}).get(key)
            if wheel is None or not wheel.endswith(".whl"):
                problems.append(f"{pin}: no wheel for {arch} in {WHEEL_RECORD.name} ({wheel})")
                continue
            wname, wversion, _, _ = parse_wheel_filename(wheel)
            if canonicalize_name(wname) != key or str(wversion) != version:
                problems.append(f"{pin}: {WHEEL_RECORD.name} has {wheel} for {arch} (run make lock)")
            elif not re.fullmatch(r"[0-9a-f]{64}", record.get("sha256", {}).get(wheel, "")):
                problems.append(f"{pin}: no sha256 for {wheel} in {WHEEL_RECORD.name} (run make lock)")
            else:
                found.add(record["sha256"][wheel])
        out.append(pin + "".join(f" \\\n    --hash=sha256:{digest}" for digest in sorted(found)) + "\n")
    return "".join(out), problems


def hashes() -> None:
    """docker/requirements.hashes.lock from requirements.lock and requirements.wheels.json (offline)."""
    text, problems = render_hashes(lock_pins(RUNTIME_LOCK), json.loads(WHEEL_RECORD.read_text()))
    HASHED_LOCK.write_text(text)
    print(f"{HASHED_LOCK.relative_to(REPO)} written")
    if problems:
        raise SystemExit("NOT every package is hashed for every image platform:\n" + "\n".join(problems))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("split", "wheels", "hashes"))
    parser.add_argument("--index-url", default=INDEX_URL,
                        help=f"wheels: the index the images download from (default {INDEX_URL})")
    args = parser.parse_args(argv)
    if args.command == "wheels":
        wheels(args.index_url)
    else:
        {"split": split, "hashes": hashes}[args.command]()


if __name__ == "__main__":
    main()
