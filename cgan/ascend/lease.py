"""Device leasing on an Ascend worker: each NPU task takes a free NPU of its own host.

The host's inventory is `CGAN_NPU_DEVICES` set on that worker ("0,1,2") or else the Device column
of `npu-smi info` (cgan.ascend.npu_smi). A lease is an exclusive `fcntl.flock` on
`<lock dir>/npu<id>.lock`: the kernel drops it when the last process holding the open file ends,
by any exit, SIGKILL included, so a killed task never leaves a device taken (no marker file to
clean up). The lock's file descriptor can be handed to the NPU tool's process (`pass_fds`) so the
device stays leased while a tool that outlives its task still runs.

All processes that share a host's NPUs must share the lock folder (`CGAN_NPU_LOCK_DIR`, default
`<tmp>/cgan-npu-locks`; a volume when several containers share a host's NPUs).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cgan.ascend.errors import AscendError, NoFreeNpu
from cgan.ascend.npu_smi import read_npu_smi
from cgan.ascend.shards import parse_devices
from cgan.ascend.validate import check_device
from cgan.checks import env_number

ENV_DEVICES = "CGAN_NPU_DEVICES"
ENV_LOCK_DIR = "CGAN_NPU_LOCK_DIR"
ENV_WAIT_S = "CGAN_NPU_LEASE_WAIT_S"
ENV_HOST = "CGAN_NPU_HOST"
DEFAULT_WAIT_S = 600.0


@dataclass(frozen=True)
class Lease:
    """A leased NPU: its ACL device id, the host, and the open lock file (fd) that holds it."""

    device: int
    host: str
    fd: int
    inventory: tuple[int, ...]
    source: str

    @property
    def label(self) -> str:
        """How perf.json and the manifest name it: `npu:<id>@<host>`."""
        return f"npu:{self.device}@{self.host}"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def host_name() -> str:
    """The name this worker's NPUs are reported under: CGAN_NPU_HOST, else the machine's hostname."""
    return (os.environ.get(ENV_HOST) or "").strip() or socket.gethostname()


def inventory(env: Mapping[str, str] | None = None, npu_smi: str = "npu-smi") -> tuple[list[int], str]:
    """(device ids of this host, where they came from): CGAN_NPU_DEVICES, else `npu-smi info`."""
    env = _env(env)
    raw = (env.get(ENV_DEVICES) or "").strip()
    if raw:
        try:
            return parse_devices(raw), ENV_DEVICES
        except AscendError as exc:
            raise AscendError(f"{ENV_DEVICES}={raw!r} on host {host_name()}: {exc}") from None
    chips = read_npu_smi(npu_smi, path=env.get("PATH"))
    if chips:
        return sorted({c.device_id for c in chips}), "npu-smi info"
    raise AscendError(
        f"host {host_name()} has no NPU inventory: `npu-smi info` is absent, failed or lists no chip; "
        f"install the Ascend driver (npu-smi) or set {ENV_DEVICES} on this worker, e.g. {ENV_DEVICES}=0,1"
    )


def lock_dir(env: Mapping[str, str] | None = None) -> Path:
    env = _env(env)
    return Path(env.get(ENV_LOCK_DIR) or Path(tempfile.gettempdir()) / "cgan-npu-locks")


def wait_s(env: Mapping[str, str] | None = None) -> float:
    return env_number(ENV_WAIT_S, DEFAULT_WAIT_S, 0, 86_400, "seconds to wait for a free NPU", float,
                      env=_env(env), error=AscendError)


def _try_lock(folder: Path, device: int) -> int | None:
    """An fd holding device's exclusive lock, or None when another process holds it."""
    fd = os.open(folder / f"npu{device}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for people (the lock is the flock)
    return fd


@contextmanager
def lease_device(*, allowed: Sequence[int] | None = None, env: Mapping[str, str] | None = None,
                 npu_smi: str = "npu-smi", wait_for_s: float | None = None, poll_s: float = 0.5,
                 log: Callable[[str], object] = print,
                 clock: Callable[[], float] = time.monotonic) -> Iterator[Lease]:
    """Lease a free NPU of this host for the `with` block; released on every exit.

    `allowed`: the run's `devices` restriction (None: any). No free device: waits up to
    `wait_for_s` (default CGAN_NPU_LEASE_WAIT_S, 600), logging each minute, then NoFreeNpu naming
    the host and the devices it saw (the task's retries apply); a restriction this host cannot
    meet is an AscendError (no retry)."""
    if allowed is not None:
        allowed = [check_device(d) for d in allowed]
    devices, source = inventory(env, npu_smi)
    host = host_name()
    candidates = [d for d in devices if allowed is None or d in set(allowed)]
    if not candidates:
        raise AscendError(
            f"host {host} has NPUs {_ids(devices)} ({source}) but the run allows only devices {_ids(allowed or [])}: "
            "none in common; clear the run's `devices` field (any NPU) or name devices this host has"
        )
    folder = lock_dir(env)
    folder.mkdir(parents=True, exist_ok=True)
    limit = wait_s(env) if wait_for_s is None else wait_for_s
    start = clock()
    next_log = start
    while True:
        for device in candidates:
            fd = _try_lock(folder, device)
            if fd is not None:
                lease = Lease(device, host, fd, tuple(devices), source)
                log(f"leased NPU {device} on host {host} (devices {_ids(devices)} from {source}; lock {folder})")
                try:
                    yield lease
                finally:
                    os.close(fd)  # drops the flock (if no child still holds the fd)
                return
        waited = clock() - start
        if waited >= limit:
            raise NoFreeNpu(
                f"no free NPU on host {host} after {waited:.0f} s: devices seen {_ids(devices)} ({source})"
                + (f", restricted to {_ids(candidates)}" if allowed is not None else "")
                + ", all leased by other tasks. Make the ascend_npu pool no larger than the fleet's NPUs "
                f"and each worker's concurrency no larger than its NPUs, or raise {ENV_WAIT_S}"
            )
        if clock() >= next_log:
            log(f"all NPUs {_ids(candidates)} of host {host} are leased; waiting (up to {limit:.0f} s)")
            next_log = clock() + 60
        time.sleep(poll_s)


def _ids(ids: Sequence[int]) -> str:
    return ",".join(map(str, ids)) or "none"
