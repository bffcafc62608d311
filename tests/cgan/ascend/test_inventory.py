"""cgan.ascend.inventory and the lease on real host shapes: containers given some NPUs, the
visibility variables, a Duo card, health states, a shared lock folder, locks of another uid, and
the om's chip against the host's."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cgan.ascend.errors import AscendError, MsameError, NoFreeNpu, OmNotForThisHost
from cgan.ascend.inventory import read_inventory
from cgan.ascend.lease import lease_device
from cgan.ascend.msame import run_msame


@pytest.fixture
def host(tmp_path, clean_env, standins_on_path):
    """One simulated Ascend host: the stand-in npu-smi, a lock folder and an empty device folder."""
    clean_env.setenv("CGAN_NPU_LOCK_DIR", str(tmp_path / "locks"))
    clean_env.setenv("CGAN_NPU_DEV_DIR", str(tmp_path / "dev"))
    clean_env.delenv("CGAN_NPU_DEVICES", raising=False)
    return clean_env


def nodes(folder: Path, *minors: int) -> str:
    """A container's /dev: davinci<N> for each N, plus the manager nodes every container gets."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"davinci{m}" for m in minors] + ["davinci_manager", "devmm_svm", "hisi_hdc"]:
        (folder / name).touch()
    return str(folder)


def quiet(_message: str) -> None:
    pass


@pytest.mark.parametrize("sample", ["container_host_ids.txt", "container_renumbered.txt"])
def test_a_container_given_davinci3_leases_acl_device_0(host, tmp_path, sample):
    """npu-smi inside shows the host's id 3 or the container's 0 (reports differ): either way ACL's
    device is 0 and the lock is the physical NPU's."""
    host.setenv("CGAN_NPU_DEV_DIR", nodes(tmp_path / "dev", 3))
    host.setenv("STANDIN_NPU_SMI_SAMPLE", sample)
    inv = read_inventory()
    assert inv.describe() == "0=davinci3 (310P3, OK)"
    with lease_device(log=quiet) as lease:
        assert (lease.device, lease.key) == (0, "davinci3")
        assert (tmp_path / "locks" / "npu-davinci3.lock").exists()


def test_the_msame_precheck_agrees_with_the_inventory_in_a_container(host, tmp_path, standin_om, bins3):
    """The old pre-check refused the right id 0 because npu-smi's Device column read 3."""
    host.setenv("CGAN_NPU_DEV_DIR", nodes(tmp_path / "dev", 3))
    host.setenv("STANDIN_NPU_SMI_SAMPLE", "container_host_ids.txt")
    host.setenv("STANDIN_MSAME_DEVICES", "0")  # ACL inside sees one device, 0 ...
    host.setenv("STANDIN_NPU_PHYSICAL", "3")  # ... which is the host's NPU 3
    run = run_msame(standin_om, bins3, tmp_path / "out", device=0)
    assert len(run.outputs) == 3 and any("ACL device 0=davinci3" in n for n in run.perf.notes)
    with pytest.raises(AscendError, match=r"device 3 is not an ACL device of this process .* 0=davinci3"):
        run_msame(standin_om, bins3, tmp_path / "out", device=3)
    host.setenv("CGAN_NPU_PRECHECK", "0")  # the override: msame itself answers
    with pytest.raises(MsameError, match="open device 3 failed"):
        run_msame(standin_om, bins3, tmp_path / "out", device=3)


def test_containers_that_own_different_npus_share_the_lock_folder(host, tmp_path):
    """Both are ACL device 0 in their container; keyed by ACL id they would take turns."""
    host.setenv("STANDIN_NPU_SMI_SAMPLE", "container_host_ids.txt")
    a = dict(os.environ, CGAN_NPU_DEV_DIR=nodes(tmp_path / "dev-a", 2))
    b = dict(os.environ, CGAN_NPU_DEV_DIR=nodes(tmp_path / "dev-b", 3))
    with lease_device(env=a, log=quiet, wait_for_s=0) as first, \
            lease_device(env=b, log=quiet, wait_for_s=0) as second:
        assert (first.device, first.key, second.device, second.key) == (0, "davinci2", 0, "davinci3")
    c = dict(os.environ, CGAN_NPU_DEV_DIR=nodes(tmp_path / "dev-c", 3))  # shares davinci3 with b
    with lease_device(env=b, log=quiet, wait_for_s=0):
        with pytest.raises(NoFreeNpu, match="no free NPU"), lease_device(env=c, log=quiet, wait_for_s=0):
            pass


def test_ascend_rt_visible_devices_renumbers_the_acl_ids(host):
    host.setenv("STANDIN_NPU_SMI_SAMPLE", "duo_x2.txt")  # devices 0..3 on two Duo cards
    host.setenv("ASCEND_RT_VISIBLE_DEVICES", "2,3")
    inv = read_inventory()
    assert inv.describe() == "0=bus-0000-81-00.0-chip0 (310P3, OK), 1=bus-0000-81-00.0-chip1 (310P3, OK)"
    assert "renumbered by ASCEND_RT_VISIBLE_DEVICES=2,3" in inv.source
    host.setenv("ASCEND_RT_VISIBLE_DEVICES", "1,4")
    with pytest.raises(AscendError, match="ASCEND_RT_VISIBLE_DEVICES=1,4 .* names device.s. 4, but this process has 4"):
        read_inventory()


def test_the_docker_runtimes_visible_devices_give_the_physical_ids(host):
    host.setenv("PATH", "/nonexistent")  # neither npu-smi nor device nodes readable
    host.setenv("ASCEND_VISIBLE_DEVICES", "6,5")
    assert read_inventory().describe() == "0=davinci5, 1=davinci6"


def test_every_chip_of_a_duo_host_is_leased_once(host):
    host.setenv("STANDIN_NPU_SMI_SAMPLE", "duo_x4.txt")  # 4 cards (ids 1,2,4,5) x 2 chips, one Bus-Id per card
    with lease_device(log=quiet) as a, lease_device(log=quiet) as b, lease_device(log=quiet) as c:
        assert [x.device for x in (a, b, c)] == [0, 1, 2]
        assert a.key == "bus-0000-01-00.0-chip0" and b.key == "bus-0000-01-00.0-chip1"


def test_a_critical_npu_is_never_leased_and_alarms_are_logged(host):
    host.setenv("STANDIN_NPU_SMI_SAMPLE", "310p3_x4_health.txt")  # OK, Alarm, Critical, Warning
    logged: list[str] = []
    with lease_device(log=logged.append) as a, lease_device(log=quiet) as b, lease_device(log=quiet) as c:
        assert [x.device for x in (a, b, c)] == [0, 1, 3]
        with pytest.raises(NoFreeNpu, match="no free NPU"), lease_device(log=quiet, wait_for_s=0):
            pass
    assert any("health Alarm: used anyway" in line for line in logged)
    assert any("2=bus-0000-81-00.0-chip0 (310P3, Critical)" in line and "unhealthy: skipped" in line
               for line in logged)
    with pytest.raises(NoFreeNpu, match="every NPU this run may use on host .* is unhealthy"), \
            lease_device(allowed=[2], log=quiet):
        pass


def test_an_om_for_another_chip_is_refused_at_lease_time(host):
    host.setenv("STANDIN_NPU_SMI_SAMPLE", "310b1_x1.txt")
    with pytest.raises(OmNotForThisHost, match="built for Ascend310P3 but host .* has Ascend310B1") as err, \
            lease_device(soc_version="Ascend310P3", log=quiet):
        pass
    assert "one atc_convert per soc_version" in str(err.value) and not err.value.retryable
    with lease_device(soc_version="Ascend310B1", log=quiet) as lease:
        assert lease.name == "310B1"
    host.setenv("PATH", "/nonexistent")
    host.setenv("CGAN_NPU_DEVICES", "0")  # no names known: nothing to check against
    with lease_device(soc_version="Ascend310P3", log=quiet) as lease:
        assert lease.device == 0


LEASE_AS_OTHER_UID = """
import os
from cgan.ascend.errors import AscendError
from cgan.ascend.lease import lease_device
os.setgid(65534)
os.setuid(65534)  # imports done as root (the venv may be in /root); the lease runs as another uid
try:
    with lease_device(log=lambda m: None, wait_for_s=0) as lease:
        print("leased", lease.key)
except AscendError as exc:
    print("refused", exc)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another uid")
def test_locks_made_by_another_uid(host, request):
    """A lock file root made (mode 0644) is locked read-only by uid 65534; a folder it cannot write
    is refused with the fix, not a raw PermissionError."""
    host.setenv("PATH", "/nonexistent")
    host.setenv("CGAN_NPU_DEVICES", "0")
    locks = Path(tempfile.mkdtemp(prefix="cgan-locks-"))  # pytest's tmp_path is private to root
    request.addfinalizer(lambda: shutil.rmtree(locks, ignore_errors=True))
    locks.chmod(0o755)
    host.setenv("CGAN_NPU_LOCK_DIR", str(locks))
    (locks / "npu-device0.lock").write_text("")
    os.chmod(locks / "npu-device0.lock", 0o644)
    env = dict(os.environ, PYTHONPATH=os.getcwd())

    def as_nobody() -> str:
        proc = subprocess.run([sys.executable, "-c", LEASE_AS_OTHER_UID], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert as_nobody() == "leased device0"
    (locks / "npu-device0.lock").unlink()
    out = as_nobody()
    assert out.startswith("refused cannot create the NPU lock npu-device0.lock in") and "chmod 1777" in out
    with lease_device(log=quiet):  # root made it: world-writable whatever the umask
        assert (locks / "npu-device0.lock").stat().st_mode & 0o777 == 0o666
