"""The Ascend worker image (docker/ascend-worker.Dockerfile) on both CANN layouts, with ais_bench.

No Docker engine here: the Dockerfile is parsed (tests.deploy.test_compose.instructions) and its
RUN scripts that decide something (the toolkit check, the ais_bench install and its check) are run
by bash against fake folders, with the image's fixed paths replaced by tmp ones and pip/python
played by recording fakes. The entry point is run for real.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from cgan.ascend.toolkit import CANN_HOMES
from tests.deploy.compose import REPO
from tests.deploy.test_compose import ASCEND_DOCKERFILE, ENTRYPOINT, index_of, instructions
from tests.standins.fixtures import STANDINS

DOCS = REPO / "docs" / "deployment.md"


def steps():
    return instructions(ASCEND_DOCKERFILE)


def args() -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in steps() if k == "ARG" and "=" in a)


def fake_home(folder: Path, layout: str) -> Path:
    """A toolkit folder whose set_env.sh puts the stand-in atc on PATH: `cann` (8.5+) or `ascend-toolkit`."""
    folder.mkdir(parents=True)
    (folder / "set_env.sh").write_text(f'export PATH="{STANDINS}:$PATH"\nexport LD_LIBRARY_PATH="{folder}/lib64"\n')
    if layout == "ascend-toolkit":
        (folder / "8.2.RC1").mkdir()
        (folder / "latest").symlink_to("8.2.RC1")
    return folder


# ----------------------------------------------------------------------------------------------
# Item 5: the CANN layout found, not assumed
# ----------------------------------------------------------------------------------------------

def toolkit_check(tmp_path: Path, cann_homes: str, cann_toolkit: str = "") -> tuple[subprocess.CompletedProcess, Path]:
    script = steps()[index_of(steps(), "RUN", "command -v atc")][1]
    keep = tmp_path / "cgan-build"
    proc = subprocess.run(["bash", "-c", script.replace("/opt/cgan-build", str(keep))],
                          env={"PATH": os.environ["PATH"], "CANN_HOMES": cann_homes, "CANN_TOOLKIT": cann_toolkit,
                               "CANN_BASE_IMAGE": "some/cann:tag"}, capture_output=True, text=True, timeout=60)
    return proc, keep / "cann-home"


def test_image_looks_for_the_toolkit_where_the_code_does():
    assert args()["CANN_HOMES"].strip('"').split() == [str(p) for p in CANN_HOMES]
    assert args()["CANN_TOOLKIT"] == ""
    env = " ".join(a for k, a in steps() if k == "ENV")
    # before: CGAN_ASCEND_TOOLKIT=/usr/local/Ascend/ascend-toolkit, fixed; now only a build argument sets it
    assert "CGAN_ASCEND_TOOLKIT=${CANN_TOOLKIT}" in env and "/usr/local/Ascend/ascend-toolkit" not in env


@pytest.mark.parametrize("layout", ["cann", "ascend-toolkit"])
def test_build_check_passes_on_both_layouts(tmp_path, layout):
    """Before: the check read ${CGAN_ASCEND_TOOLKIT}/set_env.sh with the variable fixed to
    /usr/local/Ascend/ascend-toolkit, so a CANN 8.5 image (cann/) failed the build."""
    home = fake_home(tmp_path / "Ascend" / layout, layout)
    homes = f"{tmp_path}/Ascend/cann {tmp_path}/Ascend/ascend-toolkit"
    proc, kept = toolkit_check(tmp_path, homes)
    assert proc.returncode == 0, proc.stderr
    assert kept.read_text().strip() == str(home) and f"CANN toolkit: {home}" in proc.stdout


def test_build_check_without_a_toolkit_names_every_place(tmp_path):
    homes = f"{tmp_path}/Ascend/cann {tmp_path}/Ascend/ascend-toolkit"
    proc, _ = toolkit_check(tmp_path, homes)
    assert proc.returncode == 1
    assert homes in proc.stderr and "CANN_TOOLKIT" in proc.stderr
    proc, _ = toolkit_check(tmp_path, homes, cann_toolkit=str(tmp_path / "typo"))
    assert proc.returncode == 1 and f"CANN_TOOLKIT={tmp_path / 'typo'} holds no set_env.sh" in proc.stderr
    other = fake_home(tmp_path / "opt" / "cann", "cann")
    proc, kept = toolkit_check(tmp_path, homes, cann_toolkit=str(other))
    assert proc.returncode == 0 and kept.read_text().strip() == str(other)


def test_msame_build_accepts_both_layouts():
    msame = steps()[index_of(steps(), "RUN", "MSAME_BINARY")][1]
    assert 'home="$(cat /opt/cgan-build/cann-home)"' in msame
    assert 'if [ -d "${home}/latest" ]; then DDK_PATH="${home}/latest"; else DDK_PATH="${home}"; fi' in msame
    for stub in ("${DDK_PATH}/runtime/lib64/stub", "${DDK_PATH}/acllib/lib64/stub",
                 "${DDK_PATH}/$(uname -m)-linux/devlib"):
        assert stub in msame, stub
    assert "export DDK_PATH NPU_HOST_LIB" in msame and "CGAN_ASCEND_TOOLKIT" not in msame


# ----------------------------------------------------------------------------------------------
# Item 6: ais_bench deployable
# ----------------------------------------------------------------------------------------------

def ais_step() -> str:
    """The ais_bench RUN's script, without its --mount flag (the test swaps that folder in)."""
    return re.sub(r"^(--mount=\S+\s+)+", "", steps()[index_of(steps(), "RUN", "INSTALL_AIS_BENCH")][1])


def test_ais_bench_build_arguments_are_pinned():
    a = args()
    assert a["INSTALL_AIS_BENCH"] == "0"  # opt-in
    assert a["AIS_BENCH_WHEELS"] == "docker/wheels"
    assert a["ACLRUNTIME_WHEEL_URL"] == "" and a["ACLRUNTIME_WHEEL_SHA256"] == ""  # no cp311 checksum is published
    assert a["AIS_BENCH_WHEEL_URL"].startswith("https://aisbench.obs.myhuaweicloud.com/packet/ais_bench_infer/0.0.2/")
    assert re.fullmatch(r"[0-9a-f]{64}", a["AIS_BENCH_WHEEL_SHA256"])
    assert a["TQDM_VERSION"] == "4.67.1" and re.fullmatch(r"[0-9a-f]{64}", a["TQDM_SHA256"])
    step = ais_step()
    assert "--require-hashes" in step and "sha256sum" in step
    # the check: set_env.sh sourced, then the venv imports the in-process API
    assert 'source "$1/set_env.sh"' in step and "import aclruntime, ais_bench.infer.interface" in step
    assert "/opt/cgan-venv/bin/python" in step
    # before the project's install, whose `pip check` then covers the wheels too
    assert index_of(steps(), "RUN", "INSTALL_AIS_BENCH") < index_of(steps(), "RUN", "-e /opt/cgan")


@pytest.fixture
def image(tmp_path):
    """The fixed paths of the ais_bench step, swapped for tmp ones, and fake pip and python."""
    context, build, bin_ = tmp_path / "context", tmp_path / "cgan-build", tmp_path / "bin"
    for folder in (context / "docker" / "wheels", build, bin_):
        folder.mkdir(parents=True)
    home = fake_home(tmp_path / "Ascend" / "cann", "cann")
    (build / "cann-home").write_text(f"{home}\n")
    (bin_ / "pip").write_text(f'#!/bin/sh\necho "pip $*" >> {tmp_path}/pip.log\n')
    (bin_ / "venv-python").write_text(f'#!/bin/sh\necho "LD=$LD_LIBRARY_PATH" > {tmp_path}/python.log\n'
                                      'exit "${FAKE_IMPORT_RC:-0}"\n')
    for tool in ("pip", "venv-python"):
        (bin_ / tool).chmod(0o755)

    def run(**env: str) -> subprocess.CompletedProcess:
        script = (ais_step().replace("/tmp/cgan-context", str(context)).replace("/opt/cgan-build", str(build))
                  .replace("/opt/cgan-venv/bin/python", str(bin_ / "venv-python"))
                  .replace("/tmp/ais-bench-wheels", str(tmp_path / "wheels-tmp")))
        a = args()
        full = {"PATH": f"{bin_}:{os.environ['PATH']}", **{k: a[k].strip('"') for k in a}, **env}
        return subprocess.run(["bash", "-c", script], env=full, capture_output=True, text=True, timeout=60)

    run.context = context  # type: ignore[attr-defined]
    run.tmp = tmp_path  # type: ignore[attr-defined]
    return run


def wheels(folder: Path, sums: bool = True, wrong: bool = False) -> None:
    import platform

    names = [f"aclruntime-0.0.2-cp311-cp311-linux_{platform.machine()}.whl", "ais_bench-0.0.2-py3-none-any.whl"]
    lines = []
    for name in names:
        (folder / name).write_bytes(name.encode())
        digest = hashlib.sha256(b"other" if wrong else name.encode()).hexdigest()
        lines.append(f"{digest}  {name}")
    if sums:
        (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def test_ais_bench_is_opt_in(image):
    proc = image(INSTALL_AIS_BENCH="0")
    assert proc.returncode == 0 and "not installed" in proc.stdout
    assert not (image.tmp / "pip.log").exists()
    proc = image(INSTALL_AIS_BENCH="yes")
    assert proc.returncode == 1 and "use 0, wheels or url" in proc.stderr


def test_url_source_requires_a_sha256_per_wheel(image):
    proc = image(INSTALL_AIS_BENCH="url")  # the aclruntime URL and sha have no default
    assert proc.returncode == 1 and "needs ACLRUNTIME_WHEEL_URL and its ACLRUNTIME_WHEEL_SHA256" in proc.stderr
    proc = image(INSTALL_AIS_BENCH="url", ACLRUNTIME_WHEEL_URL="https://example.invalid/a.whl",
                 ACLRUNTIME_WHEEL_SHA256="abc")
    assert proc.returncode == 1 and "64 hex digits" in proc.stderr
    proc = image(INSTALL_AIS_BENCH="url", ACLRUNTIME_WHEEL_URL="https://example.invalid/a.whl",
                 ACLRUNTIME_WHEEL_SHA256="a" * 64, AIS_BENCH_WHEEL_SHA256="")
    assert proc.returncode == 1 and "AIS_BENCH_WHEEL_SHA256" in proc.stderr


def test_wheels_from_the_context_are_checked_against_their_sums(image):
    folder = image.context / "docker" / "wheels"
    wheels(folder, sums=False)
    proc = image(INSTALL_AIS_BENCH="wheels")
    assert proc.returncode == 1 and "SHA256SUMS" in proc.stderr
    wheels(folder, wrong=True)
    proc = image(INSTALL_AIS_BENCH="wheels")
    assert proc.returncode == 1 and "is not the one docker/wheels/SHA256SUMS names" in proc.stderr
    assert not (image.tmp / "pip.log").exists()


def test_wheels_are_installed_then_must_load_with_the_cann_environment(image):
    wheels(image.context / "docker" / "wheels")
    proc = image(INSTALL_AIS_BENCH="wheels")
    assert proc.returncode == 0, proc.stderr
    pip = (image.tmp / "pip.log").read_text()
    assert "--require-hashes" in pip and "aclruntime-0.0.2-cp311" in pip and "ais_bench-0.0.2" in pip
    home = image.tmp / "Ascend" / "cann"
    assert f"LD={home}/lib64" in (image.tmp / "python.log").read_text()  # set_env.sh was sourced
    proc = image(INSTALL_AIS_BENCH="wheels", FAKE_IMPORT_RC="1")  # the import fails: the build fails
    assert proc.returncode == 1 and "ais_bench does not load in /opt/cgan-venv" in proc.stderr


def test_entrypoint_gives_the_worker_the_cann_libraries_when_ais_bench_is_installed(tmp_path):
    """Before: the worker's environment had only the driver's libraries, so InferSession could not
    load libascendcl in the task's process. Now, with aclruntime in the venv, set_env.sh's library
    path (not its PATH) reaches the worker."""
    home = tmp_path / "Ascend" / "cann"
    home.mkdir(parents=True)
    (home / "set_env.sh").write_text(f'echo chatter\nexport LD_LIBRARY_PATH="{home}/lib64:$LD_LIBRARY_PATH"\n'
                                     f'export ASCEND_OPP_PATH="{home}/opp"\nexport PATH="{home}/bin:$PATH"\n')
    venv = tmp_path / "venv"
    (venv / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    show = 'echo "L=$LD_LIBRARY_PATH O=${ASCEND_OPP_PATH:-} P=$PATH"'
    base = {"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": str(venv), "LD_LIBRARY_PATH": "/drv",
            "CGAN_CANN_HOMES": f"{tmp_path}/none {home}"}

    def run(**env):
        return subprocess.run(["bash", str(ENTRYPOINT), "bash", "-c", show], env={**base, **env},
                              capture_output=True, text=True, timeout=60).stdout.strip()

    assert run() == "L=/drv O= P=/usr/bin:/bin"  # no aclruntime: nothing changes
    (venv / "lib" / "python3.11" / "site-packages" / "aclruntime.so").write_text("")
    assert run() == f"L={home}/lib64:/drv O={home}/opp P=/usr/bin:/bin"
    assert run(CGAN_CANN_RUNTIME_ENV="0") == "L=/drv O= P=/usr/bin:/bin"


def test_docs_say_how_to_build_and_pick_ais_bench():
    text = DOCS.read_text()
    section = text.split("## ais_bench on the Ascend workers", 1)[1].split("\n## ", 1)[0]
    for needle in ("INSTALL_AIS_BENCH", "AIS_BENCH_WHEELS", "ACLRUNTIME_WHEEL_URL", "ACLRUNTIME_WHEEL_SHA256",
                   "SHA256SUMS", "import aclruntime", "npu_tool", "CGAN_NPU_TOOL", "set_env.sh"):
        assert needle in section, needle
    header = ASCEND_DOCKERFILE.read_text().split("\nARG ", 1)[0]
    assert "INSTALL_AIS_BENCH" in header and "CANN_HOMES" in header


def test_the_wheels_folder_reaches_the_build_context_but_not_git():
    from tests.deploy.dockerignore import excluded, patterns

    rules = patterns((REPO / ".dockerignore").read_text())
    assert not excluded("docker/wheels/aclruntime-0.0.2-cp311-cp311-linux_x86_64.whl", rules)
    assert not excluded("docker/wheels/SHA256SUMS", rules)
    assert "/docker/wheels/*.whl" in (REPO / ".gitignore").read_text().splitlines()
