"""Postprocessing of a whole run in the artifact store: grids, quality report, run-level perf.

Reads `outputs/shard_NNNN/` (output bins, perf.json, raw tool logs) shard by shard, writes
`grids/`, `quality/quality.json` and `perf/` (per-shard records and logs, pooled perf.json,
latency plot) into the same workspace. One shard is on local disk at a time, so memory and
disk do not grow with the number of grids. A shard whose inference task already rendered its
grids (`render.json`, see cgan.shard_render) is merged, not rendered again: only its parity
samples are read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from cgan.errors import InferenceError
from cgan.grids import grid_array, png_bytes
from cgan.outputs import OUTPUT_SUFFIX, grid_stem
from cgan.perf import PERF_NAME, aggregate
from cgan.perf_plot import latency_plot_png
from cgan.progress import is_tenth
from cgan.quality import DEFAULT_PARITY_GRIDS, QUALITY_NAME, QualityAccumulator, evenly_spaced
from cgan.shard_render import RENDER_NAME, check_render
from cgan.store import join

Log = Callable[[str], None]
# Grids rendered at a time on the fallback path (msame shards): PNG encoding, the classifier and
# store I/O release the GIL, so this scales with the worker's cores (at least 2, at most 8).
POST_THREADS = max(2, min(8, os.cpu_count() or 2))


def outputs_prefix(shard: dict) -> str:
    return f"outputs/shard_{shard['shard']:04d}"


def postprocess_run(
    store, shards: list[dict], checkpoint: str | Path, *, parity_grids: int = DEFAULT_PARITY_GRIDS,
    log: Log = print,
) -> dict:
    """Grids + quality + perf for every shard of a run; returns a small summary."""
    from cgan.bins import bin_name

    total = sum(s["count"] for s in shards)
    parity_at = set(evenly_spaced(total, parity_grids))
    quality = QualityAccumulator(checkpoint)
    grid_keys = set(store.list("grids"))
    records, done = [], 0
    with tempfile.TemporaryDirectory(prefix="cgan-post-") as tmp:
        tmp = Path(tmp)
        for shard in shards:
            prefix = outputs_prefix(shard)
            keys = store.list(prefix)
            outputs = [k for k in keys if k.endswith(OUTPUT_SUFFIX)]
            expected = {bin_name(g)[:-4] + OUTPUT_SUFFIX for g in range(shard["start"], shard["start"] + shard["count"])}
            missing = sorted(expected - {Path(k).name for k in outputs})
            if missing:
                raise InferenceError(
                    f"shard {shard['shard']} is incomplete: {len(missing)} of {shard['count']} output "
                    f"bins missing in {prefix}/ (first: {missing[0]}); re-run its inference task"
                )
            local = tmp / prefix
            tally = _render_tally(store, prefix, keys, shard, quality.classifier_sha256, grid_keys, log)
            if tally is not None:  # grids and labels were made while the shard ran
                quality.merge(tally["correct"], tally["total"], tally["grids"])
                done += tally["grids"]
                log(f"grids {done}/{total} (shard {shard['shard']} rendered during inference)")
            else:
                done = _render_shard(store, outputs, expected, local, quality, done, total, log)
            grid_range = range(shard["start"], shard["start"] + shard["count"])
            for g in sorted(parity_at.intersection(grid_range)):
                stem = bin_name(g)[:-4]
                out = store.get_file(join(prefix, stem + OUTPUT_SUFFIX), local / (stem + OUTPUT_SUFFIX))
                source = store.get_file(join(shard["bins_prefix"], f"{stem}.bin"), local / "bins" / f"{stem}.bin")
                quality.add_parity(out, source)
            shutil.rmtree(local, ignore_errors=True)
            _copy_perf(store, keys, shard)
            records.append(json.loads(store.get_bytes(join(prefix, PERF_NAME))))
    quality.precision = records[0].get("tool", {}).get("precision") if records else None
    report = quality.report()
    store.put_bytes(json.dumps(report, indent=2).encode(), f"quality/{QUALITY_NAME}")
    perf = aggregate(records)
    store.put_bytes(json.dumps(perf, indent=2).encode(), f"perf/{PERF_NAME}")
    store.put_bytes(latency_plot_png(records), "perf/latency.png")
    return {
        "grids": done,
        "label_accuracy": report["label_accuracy"],
        "parity_max_abs_err": report["parity_max_abs_err"],
        "precision": report["precision"],
        "grids_per_s": perf["grids_per_s"],
        "latency_ms_mean": perf["latency_ms"]["mean"],
        "backend": perf["backend"],
    }


def _render_shard(store, outputs: list[str], expected: set[str], local: Path, quality, done: int,
                  total: int, log: Log) -> int:
    """Grids and label checks of a shard that has no usable render.json; returns the new count."""

    def grid_of(key: str):
        """Fetch one output bin, publish its PNG to the workspace, judge its digits."""
        out = store.get_file(key, local / Path(key).name)
        store.put_bytes(png_bytes(grid_array(_read(out))), f"grids/{grid_stem(out)}.png")
        hits = quality.judge(out)
        out.unlink()
        return hits

    keys_in_order = sorted(k for k in outputs if Path(k).name in expected)
    with ThreadPoolExecutor(max_workers=POST_THREADS, thread_name_prefix="post") as pool:
        for hits in pool.map(grid_of, keys_in_order):
            quality.record(hits)
            done += 1
            if is_tenth(done, total):
                log(f"grids {done}/{total}")
    return done


def _copy_perf(store, keys: list[str], shard: dict) -> None:
    """The shard's perf record and raw tool logs, to perf/shard_NNNN.<name>."""
    for key in keys:
        name = Path(key).name
        if not key.endswith(".bin") and name != RENDER_NAME:
            store.put_bytes(store.get_bytes(key), f"perf/shard_{shard['shard']:04d}.{name}")


def _render_tally(store, prefix: str, keys: list[str], shard: dict, classifier_sha: str,
                  grid_keys: set[str], log: Log) -> dict | None:
    """The shard's render.json when it is whole and its PNGs are all there, else None."""
    from cgan.bins import bin_name

    key = join(prefix, RENDER_NAME)
    if key not in keys:
        return None
    try:
        tally = json.loads(store.get_bytes(key))
    except ValueError:
        tally = None
    why = check_render(tally, shard, classifier_sha)
    if why is None:
        pngs = {f"grids/{bin_name(g)[:-4]}.png" for g in range(shard["start"], shard["start"] + shard["count"])}
        missing = len(pngs - grid_keys)
        why = f"{missing} grid PNG(s) missing" if missing else None
    if why is not None:
        log(f"shard {shard['shard']}: {key} not used ({why}); rendering its grids again")
        return None
    return tally


def _read(path: Path):
    from cgan.outputs import read_output_bin

    return read_output_bin(path)
