"""NPU device lists: `"0,1,2"` or [0, 1, 2], checked.

The run's shard plan (one shard per device for the `ascend` target) is made by
cgan.run.plan.plan_shards, its keys by cgan.layout.workspace: there is one shard planner.
"""

from __future__ import annotations

from collections.abc import Sequence

from cgan.ascend.errors import AscendError
from cgan.ascend.validate import check_device


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
        raise AscendError("the device list is empty: name at least one NPU, e.g. 0")
    for d in items:
        check_device(d)
    if len(set(items)) != len(items):
        raise AscendError(f"device list {items} names a device twice")
    return items
