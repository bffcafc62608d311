"""cgan.ascend.lease: the host's inventory, exclusive per-device flocks across processes, SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import pytest

from cgan.ascend.errors import AscendError, NoFreeNpu
from cgan.ascend.inventory import host_name, read_inventory
from cgan.ascend.lease import lease_device

HOLDER = """
import sys, time
from cgan.ascend.lease import lease_device
with lease_device(allowed=[int(sys.argv[1])], log=lambda m: None) as lease:
    print(lease.device, flush=True)
    time.sleep(60)
"""


@pytest.fixture
def lock_env(tmp_path, clean_env):
    clean_env.setenv("CGAN_NPU_LOCK_DIR", str(tmp_path / "locks"))
    clean_env.delenv("CGAN_NPU_DEVICES", raising=False)
    clean_env.setenv("CGAN_NPU_DEV_DIR", str(tmp_path / "dev"))  # no /dev/davinci<N> nodes
    return clean_env


def hold(device: int) -> subprocess.Popen:
    """Another process (another task on this host) holding `device`'s lease."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(device)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.stdout is not None and proc.stdout.readline().strip() == str(device)
    return proc


def test_inventory_from_npu_smi_restricted_by_the_worker_setting(lock_env, standins_on_path):
    lock_env.setenv("STANDIN_NPU_SMI_SAMPLE", "atlas300_310_x8.txt")  # NPU 2048/2049, devices 0..7
    inv = read_inventory()
    assert (inv.acl_ids, inv.source) == (list(range(8)), "npu-smi info")
    lock_env.setenv("CGAN_NPU_DEVICES", "0,1,2")
    assert read_inventory().acl_ids == [0, 1, 2]
    lock_env.setenv("CGAN_NPU_DEVICES", "0,9")
    with pytest.raises(AscendError, match="CGAN_NPU_DEVICES=0,9 .* names ACL device.s. 9 this process does not have"):
        read_inventory()


def test_the_worker_setting_alone_is_the_inventory(lock_env):
    lock_env.setenv("PATH", "/nonexistent")  # no npu-smi
    lock_env.setenv("CGAN_NPU_DEVICES", "0,1,2")
    inv = read_inventory()
    assert (inv.acl_ids, inv.source, inv.npus[2].key) == ([0, 1, 2], "CGAN_NPU_DEVICES", "device2")


def test_no_inventory_names_the_fix(lock_env):
    lock_env.setenv("PATH", "/nonexistent")
    with pytest.raises(AscendError, match="set CGAN_NPU_DEVICES on this worker") as err:
        read_inventory()
    assert host_name() in str(err.value)
    lock_env.setenv("CGAN_NPU_DEVICES", "0,x")
    with pytest.raises(AscendError, match="CGAN_NPU_DEVICES='0,x'"):
        read_inventory()


def test_leases_are_exclusive_and_released(lock_env):
    lock_env.setenv("CGAN_NPU_DEVICES", "0,1")
    with lease_device(log=lambda m: None) as first, lease_device(log=lambda m: None) as second:
        assert {first.device, second.device} == {0, 1}
        assert second.label == f"npu:{second.device}@{host_name()}"
    with lease_device(allowed=[1], log=lambda m: None) as again:  # released on leaving the block
        assert again.device == 1


def test_a_device_leased_by_another_process_is_skipped(lock_env):
    lock_env.setenv("CGAN_NPU_DEVICES", "0,1")
    holder = hold(0)
    try:
        with lease_device(log=lambda m: None) as lease:
            assert lease.device == 1
    finally:
        holder.kill()
        holder.wait()


def test_no_free_device_waits_bounded_then_names_host_and_devices(lock_env):
    lock_env.setenv("CGAN_NPU_DEVICES", "3")
    holder = hold(3)
    logged: list[str] = []
    try:
        start = time.monotonic()
        with pytest.raises(NoFreeNpu) as err, lease_device(wait_for_s=1.0, poll_s=0.1, log=logged.append):
            pass
        assert 1.0 <= time.monotonic() - start < 5
    finally:
        holder.kill()
        holder.wait()
    message = str(err.value)
    assert f"no free NPU on host {host_name()}" in message and "devices seen 3 (CGAN_NPU_DEVICES)" in message
    assert "locks in " in message
    assert "ascend_npu pool" in message and any("waiting" in line for line in logged)


def test_a_sigkilled_holder_frees_its_device(lock_env):
    lock_env.setenv("CGAN_NPU_DEVICES", "0")
    holder = hold(0)
    with pytest.raises(NoFreeNpu, match="no free NPU"), lease_device(wait_for_s=0, log=lambda m: None):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with lease_device(wait_for_s=5, poll_s=0.1, log=lambda m: None) as lease:
        assert lease.device == 0


def test_a_tool_given_the_lock_keeps_the_device_after_its_task_ends(lock_env):
    """pass_fds: msame inherits the lock, so a task killed while msame runs does not free the NPU."""
    lock_env.setenv("CGAN_NPU_DEVICES", "0")
    with lease_device(log=lambda m: None) as lease:
        tool = subprocess.Popen(["sleep", "30"], pass_fds=(lease.fd,), start_new_session=True)
    try:
        with pytest.raises(NoFreeNpu, match="no free NPU"), lease_device(wait_for_s=0, log=lambda m: None):
            pass
    finally:
        tool.kill()
        tool.wait()
    with lease_device(wait_for_s=5, poll_s=0.1, log=lambda m: None) as lease:
        assert lease.device == 0


def test_a_restriction_the_host_cannot_meet(lock_env):
    lock_env.setenv("CGAN_NPU_DEVICES", "0,1")
    with pytest.raises(AscendError, match="has NPUs 0=device0, 1=device1 .* allows only devices 5") as err, \
            lease_device(allowed=[5], log=lambda m: None):
        pass
    assert host_name() in str(err.value)


def test_bad_wait_setting(lock_env):
    lock_env.setenv("CGAN_NPU_DEVICES", "0")
    lock_env.setenv("CGAN_NPU_LEASE_WAIT_S", "soon")
    with pytest.raises(AscendError, match="CGAN_NPU_LEASE_WAIT_S='soon'"), lease_device(log=lambda m: None):
        pass


def test_the_host_name_can_be_set_per_worker(lock_env):
    lock_env.setenv("CGAN_NPU_DEVICES", "0")
    lock_env.setenv("CGAN_NPU_HOST", "ascend-b")
    with lease_device(log=lambda m: None) as lease:
        assert lease.label == "npu:0@ascend-b"
