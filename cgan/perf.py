"""The perf record (`perf.json`) every runtime writes, in one schema.

Latency is per inference call (one call = one batch of `batch` rows = batch/100 grids),
timed around the runtime's execute only (no file I/O), warm-up calls excluded. grids/s and
images/s come from the measured calls of one device and are never multiplied by a chip count.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cgan.artifacts import atomic_write_bytes
from cgan.layout import SAMPLES_PER_GRID

PERF_NAME = "perf.json"


@dataclass
class PerfRecord:
    backend: str
    device: str
    batch: int
    loops: int
    calls: int
    grids: int
    warmup_calls: int
    threads: int | None
    latency_ms: dict[str, float]
    grids_per_s: float
    images_per_s: float
    wall_s: float
    notes: list[str] = field(default_factory=list)
    tool: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def write(self, folder: str | os.PathLike) -> Path:
        return atomic_write_bytes(Path(folder) / PERF_NAME, self.to_json().encode())


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of a non-empty list."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(latencies_ms: list[float]) -> dict[str, float]:
    if not latencies_ms:
        raise ValueError("no measured calls: nothing to summarise")
    return {
        "mean": round(statistics.fmean(latencies_ms), 4),
        "median": round(statistics.median(latencies_ms), 4),
        "p99": round(percentile(latencies_ms, 99), 4),
        "min": round(min(latencies_ms), 4),
        "max": round(max(latencies_ms), 4),
    }


def make_record(
    *, backend: str, device: str, batch: int, latencies_ms: list[float], grids: int,
    warmup_calls: int, threads: int | None, wall_s: float, loops: int = 1,
    notes: list[str] | None = None, tool: dict[str, str] | None = None,
) -> PerfRecord:
    """Build a record from per-call latencies; throughput = grids over summed call time."""
    summary = latency_summary(latencies_ms)
    grids_per_call = batch / SAMPLES_PER_GRID
    grids_per_s = 1000.0 * grids_per_call / summary["mean"] if summary["mean"] > 0 else 0.0
    return PerfRecord(
        backend=backend, device=device, batch=batch, loops=loops, calls=len(latencies_ms),
        grids=grids, warmup_calls=warmup_calls, threads=threads, latency_ms=summary,
        grids_per_s=round(grids_per_s, 2), images_per_s=round(grids_per_s * SAMPLES_PER_GRID, 1),
        wall_s=round(wall_s, 3), notes=list(notes or []), tool=dict(tool or {}),
    )


def read_record(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())
