"""Several NPUs: a run's bins split into one shard per device, staged in the artifact store.

Shard i holds a contiguous, sorted slice of the bins (sizes differ by at most one), lives under
`bins/shard_<i:04d>/` and its outputs under `outputs/shard_<i:04d>/`. `shard_specs` gives the
small dicts an MsameInferenceOperator is mapped over: {"shard", "bins_prefix", "device"}.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cgan.ascend.errors import AscendError
from cgan.ascend.validate import check_device

BINS_PREFIX = "bins"
OUTPUTS_PREFIX = "outputs"


@dataclass(frozen=True)
class Shard:
    index: int
    device: int
    bins: tuple[Path, ...]

    @property
    def bins_prefix(self) -> str:
        return shard_prefix(self.index)

    def spec(self) -> dict:
        return {"shard": self.index, "bins_prefix": self.bins_prefix, "device": self.device}


def shard_prefix(index: int, root: str = BINS_PREFIX) -> str:
    return f"{root}/shard_{index:04d}"


def outputs_prefix(index: int) -> str:
    return shard_prefix(index, OUTPUTS_PREFIX)


def parse_devices(devices: str | Sequence[int]) -> list[int]:
    """`"0,1,2"` or [0, 1, 2] -> [0, 1, 2]; each 0..255, no duplicates, at least one."""
    if isinstance(devices, str):
        try:
            items = [int(x) for x in devices.split(",") if x.strip()]
        except ValueError:
            raise AscendError(f"device list {devices!r}: use comma-separated integers, e.g. 0,1") from None
    else:
        items = list(devices)
    if not items:
        raise AscendError("the device list is empty: name at least one device id "
                          "(the Device column of `npu-smi info`), e.g. 0")
    for d in items:
        check_device(d)
    if len(set(items)) != len(items):
        raise AscendError(f"device list {items} names a device twice")
    return items


def split_bins(bins: Sequence[str | os.PathLike], devices: str | Sequence[int]) -> list[Shard]:
    """One shard per device (fewer when there are fewer bins than devices), in sorted bin order."""
    devices = parse_devices(devices)
    ordered = sorted(Path(b) for b in bins)
    if not ordered:
        raise AscendError("no bins to split into shards")
    count = min(len(devices), len(ordered))
    size, extra = divmod(len(ordered), count)
    shards, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        shards.append(Shard(i, devices[i], tuple(ordered[start:end])))
        start = end
    return shards


def shard_specs(shards: Sequence[Shard]) -> list[dict]:
    return [s.spec() for s in shards]


def stage_shards(store, bins: Sequence[str | os.PathLike], devices: str | Sequence[int]) -> list[dict]:
    """Upload each shard's bins to `bins/shard_<i>/` (replacing what was there); its specs."""
    shards = split_bins(bins, devices)
    store.delete_prefix(BINS_PREFIX)
    for shard in shards:
        for path in shard.bins:
            store.put_file(path, f"{shard.bins_prefix}/{path.name}")
    return shard_specs(shards)
