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

from cgan.errors import InferenceError
from cgan.layout.tensors import SAMPLES_PER_GRID
from cgan.storage.files import atomic_write_bytes

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
    samples_ms: list[float] = field(default_factory=list)  # every measured call, in order

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def write(self, folder: str | os.PathLike) -> Path:
        return atomic_write_bytes(Path(folder) / PERF_NAME, self.to_json().encode())


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (Linux VmHWM, MiB); None where /proc has none."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


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
        samples_ms=[round(v, 4) for v in latencies_ms],
    )


def read_record(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


def aggregate(records: list[dict]) -> dict:
    """One run-level record from per-shard records (their measured calls pooled).

    grids_per_s is per device (grids over the summed call time), the same basis as one shard's
    figure; shards that ran side by side on several devices are not added up.
    """
    if not records:
        raise InferenceError("no shard perf records to aggregate: no shard handed over its perf.json; "
                             "re-run the inference tasks")
    samples = [v for r in records for v in r.get("samples_ms", [])]
    calls = sum(r["calls"] for r in records)
    if len(samples) != calls:
        short = next(i for i, r in enumerate(records) if len(r.get("samples_ms", [])) != r["calls"])
        raise InferenceError(f"shard perf record {short} (of {len(records)}, in shard order) lacks its samples_ms, "
                             "so latencies cannot be pooled: its perf.json is from an older version or cut "
                             "short; re-run that shard's inference task")
    batch = records[0]["batch"]
    summary = latency_summary(samples)
    grids_per_s = 1000.0 * (batch / SAMPLES_PER_GRID) / summary["mean"] if summary["mean"] > 0 else 0.0
    return {
        "backend": records[0]["backend"],
        "devices": sorted({r["device"] for r in records}),
        "batch": batch,
        "threads": records[0].get("threads"),
        "shards": len(records),
        "calls": calls,
        "grids": sum(r["grids"] for r in records),
        "warmup_calls": sum(r["warmup_calls"] for r in records),
        "latency_ms": summary,
        "grids_per_s": round(grids_per_s, 2),
        "images_per_s": round(grids_per_s * SAMPLES_PER_GRID, 1),
        "wall_s_per_shard": [r["wall_s"] for r in records],
        "notes": records[0].get("notes", []) + [
            "run-level figures pool the calls of every shard; grids/s is per device, never "
            "multiplied by the number of devices or chips",
        ],
        "tool": records[0].get("tool", {}),
    }
