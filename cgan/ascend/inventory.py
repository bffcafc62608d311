"""This process's NPUs: for each, the ACL id a tool takes (`--device`, `InferSession(device_id)`)
and the physical identity its lease locks, with npu-smi's name and health where known.

ACL numbers the NPUs a process can see from 0, so inside a container given `/dev/davinci3` the
NPU is ACL device 0, and `ASCEND_RT_VISIBLE_DEVICES` renumbers again. A lease keyed by the ACL id
would make two containers that own different NPUs fight over "device 0"; it is keyed by the
physical NPU instead. How the inventory is built (docs/ascend.md "Device identity"):

1. The NPUs this process has: its `/dev/davinci<N>` nodes (N is the host's id, which a container
   mapping keeps), else `ASCEND_VISIBLE_DEVICES` (the Ascend Docker runtime's host ids), else the
   Device column of `npu-smi info`. ACL's numbering is their order: the k-th is ACL device k.
2. `npu-smi info` adds name (the soc), health and bus id. Inside a container its Device column
   shows either the host's ids or the container's (public reports differ): both are matched.
3. `ASCEND_RT_VISIBLE_DEVICES=a,b`: ACL device 0 is the a-th of step 1, 1 the b-th.
4. `CGAN_NPU_DEVICES` (worker setting) restricts to those ACL ids; with nothing from steps 1-2 it
   is the inventory (then the lock key is the ACL id: give such workers no shared lock folder).

Lock keys: `davinci<N>` from device nodes; `bus-<bus id>-chip<chip>` from npu-smi alone (a Duo
card's two chips share a bus id); `device<id>` from CGAN_NPU_DEVICES alone.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cgan.ascend.errors import AscendError
from cgan.ascend.npu_smi import NpuChip, read_npu_smi, soc_of_name
from cgan.ascend.shards import parse_devices

ENV_DEVICES = "CGAN_NPU_DEVICES"
ENV_HOST = "CGAN_NPU_HOST"
ENV_DEV_DIR = "CGAN_NPU_DEV_DIR"
RT_VISIBLE = "ASCEND_RT_VISIBLE_DEVICES"
DOCKER_VISIBLE = "ASCEND_VISIBLE_DEVICES"
DAVINCI_RE = re.compile(r"davinci(\d{1,3})\Z")
UNUSABLE_HEALTH = frozenset({"critical"})  # npu-smi Health: OK, Warning, Alarm, Critical


@dataclass(frozen=True)
class Npu:
    acl_id: int
    key: str
    name: str | None = None
    health: str | None = None

    @property
    def soc_version(self) -> str | None:
        return soc_of_name(self.name)

    @property
    def usable(self) -> bool:
        return (self.health or "").lower() not in UNUSABLE_HEALTH

    def describe(self) -> str:
        extra = ", ".join(x for x in (self.name, self.health) if x)
        return f"{self.acl_id}={self.key}" + (f" ({extra})" if extra else "")


@dataclass(frozen=True)
class Inventory:
    npus: tuple[Npu, ...]
    source: str
    notes: tuple[str, ...] = ()
    cards: tuple[int, ...] = ()  # npu-smi's NPU column (card numbers), for the error below

    @property
    def acl_ids(self) -> list[int]:
        return [n.acl_id for n in self.npus]

    def describe(self) -> str:
        """`0=davinci3 (310P3, OK), 1=davinci5 (310P3, Alarm)`: ACL id = what is locked."""
        return ", ".join(n.describe() for n in self.npus) or "none"

    def get(self, acl_id: int) -> Npu:
        """The NPU with this ACL id; AscendError naming the ids there are otherwise."""
        for npu in self.npus:
            if npu.acl_id == acl_id:
                return npu
        hint = (f" ({acl_id} is in npu-smi's NPU column, a card number, not a device)"
                if acl_id in self.cards else "")
        raise AscendError(
            f"device {acl_id} is not an ACL device of this process on host {host_name()}: its devices are "
            f"{self.describe()} ({self.source}){hint}. ACL ids count this process's NPUs from 0 (on a bare "
            "host npu-smi's Device column; inside a container and after ASCEND_RT_VISIBLE_DEVICES, renumbered)"
        )


def host_name() -> str:
    """The name this worker's NPUs are reported under: CGAN_NPU_HOST, else the machine's hostname."""
    return (os.environ.get(ENV_HOST) or "").strip() or socket.gethostname()


def davinci_minors(dev_dir: Path) -> list[int]:
    """N of every /dev/davinci<N> (not davinci_manager), sorted; [] when none or unreadable."""
    try:
        names = os.listdir(dev_dir)
    except OSError:
        return []
    return sorted(int(m.group(1)) for m in map(DAVINCI_RE.fullmatch, names) if m)


def _id_list(env: Mapping[str, str], var: str) -> list[int] | None:
    raw = (env.get(var) or "").strip()
    if not raw:
        return None
    try:
        return parse_devices(raw)
    except AscendError as exc:
        raise AscendError(f"{var}={raw!r} on host {host_name()}: {exc}") from None


def _chip_key(chip: NpuChip) -> str:
    if chip.bus_id and chip.bus_id != "NA":
        return f"bus-{chip.bus_id.replace(':', '-')}-chip{chip.chip_id}"
    return f"npu{chip.npu_id}-chip{chip.chip_id}"


def _match_chips(physical: list[int], chips: list[NpuChip] | None, notes: list[str]) -> dict[int, NpuChip]:
    """npu-smi's chip for each physical id, whether its Device column is the host's numbering
    or the container's (0..n-1 in the nodes' order)."""
    if not chips:
        return {}
    by_id = {c.device_id: c for c in chips}
    if set(physical) <= set(by_id):
        return {p: by_id[p] for p in physical}
    if sorted(by_id) == list(range(len(physical))):
        return {p: by_id[i] for i, p in enumerate(physical)}
    notes.append(f"npu-smi lists devices {_ids(sorted(by_id))}, which match neither this process's NPUs "
                 f"{_ids(physical)} nor their numbering from 0: names and health not known")
    return {}


def read_inventory(env: Mapping[str, str] | None = None, npu_smi: str = "npu-smi",
                   dev_dir: str | os.PathLike | None = None) -> Inventory:
    """The NPUs this process can use (module docstring); AscendError when it finds none."""
    env = os.environ if env is None else env
    folder = Path(dev_dir or env.get(ENV_DEV_DIR) or "/dev")
    notes: list[str] = []
    chips = read_npu_smi(npu_smi, path=env.get("PATH"))
    minors = davinci_minors(folder)
    docker_visible = _id_list(env, DOCKER_VISIBLE)
    base: list[Npu]
    if minors or docker_visible:
        physical = minors or sorted(docker_visible or [])
        if minors and docker_visible and sorted(docker_visible) != minors:
            notes.append(f"{DOCKER_VISIBLE}={_ids(docker_visible)} but the device nodes are davinci"
                         f"{_ids(minors)}: the nodes are used")
        matched = _match_chips(physical, chips, notes)
        base = [Npu(i, f"davinci{p}", *_named(matched.get(p))) for i, p in enumerate(physical)]
        source = (f"device nodes {folder}/davinci{{{_ids(minors)}}}" if minors
                  else f"{DOCKER_VISIBLE}={_ids(docker_visible or [])}") + (" + npu-smi info" if matched else "")
    elif chips:
        ordered = sorted(chips, key=lambda c: c.device_id)
        base = [Npu(i, _chip_key(c), c.name, c.health) for i, c in enumerate(ordered)]
        source = "npu-smi info"
    else:
        base = []
        source = ""
    wanted = _id_list(env, ENV_DEVICES)
    if not base:
        if wanted is None:
            raise AscendError(
                f"host {host_name()} has no NPU inventory: no /dev/davinci<N> node in {folder}, no "
                f"{DOCKER_VISIBLE}, and `npu-smi info` is absent, failed or lists no chip; map the NPUs "
                f"into this container and install the driver (npu-smi), or set {ENV_DEVICES} on this "
                f"worker, e.g. {ENV_DEVICES}=0,1"
            )
        return Inventory(tuple(Npu(d, f"device{d}") for d in wanted), ENV_DEVICES, tuple(notes))
    cards = tuple(sorted({c.npu_id for c in chips or []}))
    rt = _id_list(env, RT_VISIBLE)
    if rt is not None:
        outside = [v for v in rt if v >= len(base)]
        if outside:
            raise AscendError(
                f"{RT_VISIBLE}={_ids(rt)} on host {host_name()} names device(s) {_ids(outside)}, but this "
                f"process has {len(base)} NPU(s): {', '.join(n.describe() for n in base)} ({source}); "
                f"list ids from 0 to {len(base) - 1}, or unset it"
            )
        base = [Npu(i, base[v].key, base[v].name, base[v].health) for i, v in enumerate(rt)]
        source += f", renumbered by {RT_VISIBLE}={_ids(rt)}"
    if wanted is not None:
        missing = [d for d in wanted if d not in {n.acl_id for n in base}]
        if missing:
            raise AscendError(
                f"{ENV_DEVICES}={_ids(wanted)} on host {host_name()} names ACL device(s) {_ids(missing)} this "
                f"process does not have: its devices are {', '.join(n.describe() for n in base)} ({source}); "
                f"fix or unset {ENV_DEVICES}"
            )
        base = [n for n in base if n.acl_id in set(wanted)]
        source += f", restricted by {ENV_DEVICES}"
    return Inventory(tuple(base), source, tuple(notes), cards)


def _named(chip: NpuChip | None) -> tuple[str | None, str | None]:
    return (chip.name, chip.health) if chip else (None, None)


def _ids(ids: Sequence[int]) -> str:
    return ",".join(map(str, ids)) or "none"
