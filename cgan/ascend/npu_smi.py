"""`npu-smi info`: the host's NPUs, their ACL device ids and the atc --soc_version.

Two table shapes occur (both parsed):

    | NPU     Name      | Health | ...        310 / 310P / 310B: each NPU has a "Chip Device"
    | Chip    Device    | Bus-Id | ...        row whose Device column is the ACL device id
    | 0       310P3     | OK     | ...
    | 0       0         | 0000:82:00.0 | ...

    | NPU   Name        | Health | ...        910B / A3: "Chip" (A3: "Chip  Phy-ID") rows carry
    | Chip              | Bus-Id | ...        no Device column; ACL ids are then 0..n-1 in the
    | 0     910B3       | OK     | ...        order listed (logical ids are dense)
    | 0                 | 0000:C1:00.0 | ...

msame's `--device` (aclrtSetDevice) takes an ACL id: on a bare host the Device column, never the
NPU column (an Atlas 300 card lists NPU 2048 with devices 0..3; an Atlas 300I Duo lists each card's
NPU row once per chip, both chips on one Bus-Id). Inside a container ACL renumbers from 0 while the
Device column may show the host's ids: cgan.ascend.inventory reconciles them.

soc_version = "Ascend" + Name (310P3 -> Ascend310P3). A Name that already starts with "Ascend"
(A3 parts) needs the `<ChipName>_<NPUName>` form from `npu-smi info -t board`, so it yields None.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from cgan.ascend.validate import SOC_VERSION_RE

ROW_RE = re.compile(r"^\|(.*)\|\s*$")
CHIP_ROW_RE = re.compile(r"^(?:[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d|NA)\b")  # Bus-Id


def soc_of_name(name: str | None) -> str | None:
    """atc's --soc_version for npu-smi's Name: "Ascend" + Name; None for an A3 name or no name."""
    if not name or name.startswith("Ascend"):
        return None
    soc = f"Ascend{name}"
    return soc if SOC_VERSION_RE.fullmatch(soc) else None


@dataclass(frozen=True)
class NpuChip:
    npu_id: int
    name: str
    chip_id: int
    device_id: int
    health: str
    bus_id: str

    @property
    def soc_version(self) -> str | None:
        return soc_of_name(self.name)


def _cells(line: str) -> list[str] | None:
    m = ROW_RE.match(line.strip())
    return [c.strip() for c in m.group(1).split("|")] if m else None


def parse_npu_smi_info(text: str) -> list[NpuChip]:
    """Every chip of the device table (the process table below it is ignored)."""
    chips: list[NpuChip] = []
    has_device_col = False
    pending: tuple[int, str, str] | None = None  # the NPU row the next chip rows belong to
    in_table = False
    for line in text.splitlines():
        cells = _cells(line)
        if not cells:
            continue
        first = cells[0].split()
        if first[:2] == ["NPU", "Name"]:
            in_table = True
            continue
        if first[:1] == ["Chip"] and in_table:
            has_device_col = "Device" in first
            continue
        if first[:2] == ["NPU", "Chip"] or (cells[0].startswith("No running") and in_table):
            break  # the process table
        if not in_table or not first or not first[0].isdigit() or len(cells) < 2:
            continue
        if not CHIP_ROW_RE.match(cells[1]):  # NPU row: "<npu> <name> | <health> | ..."
            pending = (int(first[0]), first[1], cells[1]) if len(first) >= 2 else None
        elif pending is not None:  # chip row: "<chip> [<device>] | <bus-id or NA> | ..."
            npu_id, name, health = pending
            if has_device_col and len(first) >= 2 and first[1].isdigit():
                device_id = int(first[1])
            else:
                device_id = len(chips)
            chips.append(NpuChip(npu_id, name, int(first[0]), device_id, health, cells[1].split()[0]))
    return chips


def soc_version_of(chips: list[NpuChip]) -> str | None:
    """The one soc_version of all chips, or None (no chips, A3 names, or mixed models)."""
    socs = {c.soc_version for c in chips}
    return socs.pop() if len(socs) == 1 and None not in socs else None


def read_npu_smi(npu_smi: str = "npu-smi", timeout_s: float = 30,
                 path: str | None = None) -> list[NpuChip] | None:
    """Chips from `npu-smi info`, or None when npu-smi is not installed or fails.
    `path`: the PATH to look npu-smi up on (default: this process's)."""
    program = shutil.which(npu_smi, path=path)
    if program is None:
        return None
    try:
        proc = subprocess.run([program, "info"], shell=False, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return parse_npu_smi_info(proc.stdout)
