"""The shard: which grids one inference task makes, and which of them it hands over raw.

Made and checked once, by the plan (cgan.run.plan.plan_shards). It crosses Airflow's XCom as
the plain dict of `as_xcom` and comes back whole with `Shard.from_xcom`; everything else reads
it by attribute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cgan.errors import CganError
from cgan.layout.workspace import bins_prefix, grid_name, outputs_prefix


class ShardError(CganError):
    """A shard handed to a task is not one the plan made."""

    retryable = False


@dataclass(frozen=True)
class Shard:
    """Grids `start .. start + count - 1` of a run.

    parity: the grids of the run's parity sample in this shard (the only raw outputs handed
    over, unless keep_raw_outputs); None: hand every raw output over. judge: the grids of the
    run's label sample in this shard (judged on the inference worker); None: judge every grid.
    devices: target ascend, the NPUs its task may lease (None: any of its host's)."""

    index: int
    start: int
    count: int
    parity: tuple[int, ...] | None = None
    judge: tuple[int, ...] | None = None
    keep_raw_outputs: bool = False
    devices: tuple[int, ...] | None = None

    @property
    def grids(self) -> range:
        return range(self.start, self.start + self.count)

    @property
    def bins_prefix(self) -> str:
        return bins_prefix(self.index)

    @property
    def outputs_prefix(self) -> str:
        return outputs_prefix(self.index)

    @property
    def kept_raw_outputs(self) -> set[int] | None:
        """Grids whose raw output bin the task hands over (None: every grid)."""
        return None if self.keep_raw_outputs or self.parity is None else set(self.parity)

    @property
    def judged_stems(self) -> set[str] | None:
        """Stems of the grids the worker judges (None: every grid)."""
        return None if self.judge is None else {grid_name(g) for g in self.judge}

    @property
    def handed_stems(self) -> set[str] | None:
        """Stems of the grids whose raw output bin is handed over (None: every grid)."""
        keep = self.kept_raw_outputs
        return None if keep is None else {grid_name(g) for g in keep}

    def as_xcom(self) -> dict:
        """The shard as Airflow's XCom and the task's mapped argument carry it (JSON)."""
        return {"shard": self.index, "start": self.start, "count": self.count, "bins_prefix": self.bins_prefix,
                "parity": None if self.parity is None else list(self.parity),
                "judge": None if self.judge is None else list(self.judge),
                "keep_raw_outputs": self.keep_raw_outputs,
                "devices": None if self.devices is None else list(self.devices)}

    @classmethod
    def from_xcom(cls, value: Shard | Mapping[str, Any]) -> Shard:
        """The Shard that `as_xcom` wrote; ShardError when `value` is not such a dict."""
        if isinstance(value, Shard):
            return value
        fields = ("shard", "start", "count", "parity", "judge", "keep_raw_outputs", "devices")
        if not isinstance(value, Mapping) or not {"shard", "start", "count"} <= set(value) or set(value) - {
                *fields, "bins_prefix"}:
            raise ShardError(f"a shard is a dict of the plan's shard fields ({', '.join(fields)}), got {value!r}: "
                             "map the task over the plan task's `shards`")
        index, start, count = (_whole(value, name) for name in ("shard", "start", "count"))
        if count < 1:
            raise ShardError(f"shard {index} has no grids (count {count})")
        if value.get("bins_prefix", bins_prefix(index)) != bins_prefix(index):
            raise ShardError(f"shard {index}: bins_prefix {value['bins_prefix']!r} is not the plan's "
                             f"{bins_prefix(index)!r}")
        grids = range(start, start + count)
        parity, judge = (_grids(value, name, index, grids) for name in ("parity", "judge"))
        devices = value.get("devices")
        if devices is not None and (not isinstance(devices, list) or not devices
                                    or not all(isinstance(d, int) and not isinstance(d, bool) for d in devices)):
            raise ShardError(f"shard {index}: devices must be a non-empty list of device ids or null, got {devices!r}")
        keep = value.get("keep_raw_outputs", False)
        if not isinstance(keep, bool):
            raise ShardError(f"shard {index}: keep_raw_outputs must be true or false, got {keep!r}")
        return cls(index, start, count, parity, judge, keep, None if devices is None else tuple(devices))


def _whole(value: Mapping[str, Any], name: str) -> int:
    n = value[name]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ShardError(f"shard field {name!r} must be a whole number of 0 or more, got {n!r}")
    return n


def _grids(value: Mapping[str, Any], name: str, index: int, grids: range) -> tuple[int, ...] | None:
    items = value.get(name)
    if items is None:
        return None
    if not isinstance(items, list) or not all(isinstance(g, int) and not isinstance(g, bool) and g in grids
                                              for g in items):
        raise ShardError(f"shard {index}: {name} must list grids of the shard ({grids.start}..{grids.stop - 1}), "
                         f"got {items!r}")
    return tuple(items)
