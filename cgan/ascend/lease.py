"""Device leasing on an Ascend worker: each NPU task takes a free NPU of its own host.

The NPUs are this process's inventory (cgan.ascend.inventory: device nodes, the Ascend Docker
runtime's and ACL's visibility variables, npu-smi, CGAN_NPU_DEVICES). A lease is an exclusive
`fcntl.flock` on `<lock dir>/npu-<physical key>.lock` (e.g. `npu-davinci3.lock`): keyed by the
physical NPU, not by the ACL id, which every container numbers from 0. The kernel drops a flock
when the last process holding the open file ends, by any exit, SIGKILL included, so a killed task
never leaves a device taken (no marker file to clean up). The lock's file descriptor can be
handed to the NPU tool's process (`pass_fds`) so the device stays leased while a tool that
outlives its task still runs.

All processes that share a host's NPUs must share the lock folder (`CGAN_NPU_LOCK_DIR`, default
`<tmp>/cgan-npu-locks`; compose mounts one host folder into every Ascend worker of the host).
Lock files are made world-writable, and one made by another uid that this one cannot write is
locked through a read-only descriptor (flock needs no write access).

The om's soc_version, when given, must be the leased NPU's (`Ascend` + npu-smi's Name): a shard
that lands on another chip is refused before the tool loads the om (OmNotForThisHost).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cgan.ascend.errors import AscendError, NoFreeNpu, OmNotForThisHost
from cgan.ascend.inventory import Inventory, Npu, host_name, read_inventory
from cgan.ascend.validate import check_device
from cgan.checks import env_number

ENV_LOCK_DIR = "CGAN_NPU_LOCK_DIR"
ENV_WAIT_S = "CGAN_NPU_LEASE_WAIT_S"
DEFAULT_WAIT_S = 600.0
LOCK_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Lease:
    """A leased NPU: its ACL device id, its physical key, the host, and the lock's open fd."""

    device: int
    host: str
    fd: int
    inventory: tuple[int, ...]
    source: str
    key: str = ""
    name: str | None = None

    @property
    def label(self) -> str:
        """How perf.json and the manifest name it: `npu:<id>@<host>`."""
        return f"npu:{self.device}@{self.host}"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def lock_dir(env: Mapping[str, str] | None = None) -> Path:
    env = _env(env)
    return Path(env.get(ENV_LOCK_DIR) or Path(tempfile.gettempdir()) / "cgan-npu-locks")


def wait_s(env: Mapping[str, str] | None = None) -> float:
    return env_number(ENV_WAIT_S, DEFAULT_WAIT_S, 0, 86_400, "seconds to wait for a free NPU", float,
                      env=_env(env), error=AscendError)


def lock_path(folder: Path, npu: Npu) -> Path:
    return folder / f"npu-{LOCK_NAME_RE.sub('-', npu.key)}.lock"


def _open_lock(path: Path) -> tuple[int, bool]:
    """(fd, writable) of a lock file, made if missing; one another uid made and this one cannot
    write is opened read-only (flock needs no write access)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        try:
            return os.open(path, os.O_RDONLY), False
        except OSError:
            folder = path.parent
            raise AscendError(
                f"cannot create the NPU lock {path.name} in {folder} (uid {os.geteuid()}): every worker "
                f"of this host must be able to write that folder; e.g. `chmod 1777 {folder}` on the host, "
                f"or point {ENV_LOCK_DIR} at a folder they share"
            ) from None
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o666)  # whatever the umask: workers of other uids lock it too
    except OSError:
        pass
    return fd, True


def _try_lock(path: Path) -> int | None:
    """An fd holding the lock at `path`, or None when another process holds it."""
    fd, writable = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    if writable:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for people (the lock is the flock)
    return fd


def _candidates(inv: Inventory, allowed: Sequence[int] | None, soc_version: str | None,
                host: str, log: Callable[[str], object]) -> list[Npu]:
    npus = [n for n in inv.npus if allowed is None or n.acl_id in set(allowed)]
    if not npus:
        raise AscendError(
            f"host {host} has NPUs {inv.describe()} ({inv.source}) but the run allows only devices "
            f"{_ids(allowed or [])}: none in common; clear the run's `devices` field (any NPU) or name "
            "devices this host has"
        )
    if soc_version:
        known = [n for n in npus if n.soc_version]
        fits = [n for n in npus if n.soc_version in (None, soc_version)]
        if known and not any(n.soc_version == soc_version for n in known):
            chips = sorted({n.soc_version for n in known if n.soc_version})
            raise OmNotForThisHost(
                f"the om was built for {soc_version} but host {host} has {', '.join(chips)} "
                f"(NPUs {inv.describe()}): an om runs only on the chip atc built it for. For a mixed "
                "fleet, convert once per chip (one atc_convert per soc_version) and send each om's "
                "shards to that chip's hosts (a Celery queue per kind, docs/deployment.md), or run "
                "this DAG on those hosts only"
            )
        if len(fits) < len(npus):
            log(f"NPUs {_ids([n.acl_id for n in npus if n not in fits])} of host {host} are not "
                f"{soc_version}: skipped")
        npus = fits
    sick = [n for n in npus if not n.usable]
    for npu in npus:
        if npu.usable and (npu.health or "OK").upper() != "OK":
            log(f"NPU {npu.describe()} of host {host} reports health {npu.health}: used anyway")
    if sick:
        log(f"NPU(s) {', '.join(n.describe() for n in sick)} of host {host} are unhealthy: skipped")
        npus = [n for n in npus if n.usable]
        if not npus:
            raise NoFreeNpu(f"every NPU this run may use on host {host} is unhealthy "
                            f"({', '.join(n.describe() for n in sick)}; npu-smi info): the task's retries "
                            "may land on another host; check `npu-smi info` on this one")
    return npus


@contextmanager
def lease_device(*, allowed: Sequence[int] | None = None, env: Mapping[str, str] | None = None,
                 npu_smi: str = "npu-smi", wait_for_s: float | None = None, poll_s: float = 0.5,
                 soc_version: str | None = None, log: Callable[[str], object] = print,
                 clock: Callable[[], float] = time.monotonic) -> Iterator[Lease]:
    """Lease a free NPU of this host for the `with` block; released on every exit.

    `allowed`: the run's `devices` restriction, ACL ids (None: any). `soc_version`: the om's; an
    NPU npu-smi names as another chip is never leased, and a host with none of that chip raises
    OmNotForThisHost (no retry). No free device: waits up to `wait_for_s` (default
    CGAN_NPU_LEASE_WAIT_S, 600), logging each minute, then NoFreeNpu naming the host and the
    devices it saw (the task's retries apply); a restriction this host cannot meet is an
    AscendError (no retry)."""
    if allowed is not None:
        allowed = [check_device(d) for d in allowed]
    inv = read_inventory(env, npu_smi)
    host = host_name()
    for note in inv.notes:
        log(note)
    candidates = _candidates(inv, allowed, soc_version, host, log)
    folder = lock_dir(env)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AscendError(f"cannot make the NPU lock folder {folder}: {exc.strerror}; create it on the host, "
                          f"writable by every worker, or point {ENV_LOCK_DIR} elsewhere") from None
    limit = wait_s(env) if wait_for_s is None else wait_for_s
    start = clock()
    next_log = start
    while True:
        for npu in candidates:
            fd = _try_lock(lock_path(folder, npu))
            if fd is not None:
                lease = Lease(npu.acl_id, host, fd, tuple(inv.acl_ids), inv.source, npu.key, npu.name)
                log(f"leased NPU {npu.acl_id} ({npu.key}) on host {host} (NPUs {inv.describe()} from "
                    f"{inv.source}; lock {folder})")
                try:
                    yield lease
                finally:
                    os.close(fd)  # drops the flock (if no child still holds the fd)
                return
        waited = clock() - start
        if waited >= limit:
            raise NoFreeNpu(
                f"no free NPU on host {host} after {waited:.0f} s: devices seen {_ids(inv.acl_ids)} ({inv.source})"
                + (f", restricted to {_ids([n.acl_id for n in candidates])}" if allowed is not None else "")
                + f", all leased by other tasks (locks in {folder}). Make the ascend_npu pool no larger than "
                "the fleet's NPUs and each worker's concurrency no larger than its NPUs, or raise "
                f"{ENV_WAIT_S}"
            )
        if clock() >= next_log:
            log(f"all NPUs {_ids([n.acl_id for n in candidates])} of host {host} are leased; waiting "
                f"(up to {limit:.0f} s)")
            next_log = clock() + 60
        time.sleep(poll_s)


def _ids(ids: Sequence[int]) -> str:
    return ",".join(map(str, ids)) or "none"
