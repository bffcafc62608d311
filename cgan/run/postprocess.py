"""Postprocessing of a whole run in the artifact store: quality report and run-level perf.

Each inference task has already rendered, packed and judged its shard's grids on its own worker
and handed over render.json (cgan.run.shard_render). Postprocess merges the tallies, checks
parity with PyTorch on the run's parity sample, copies each shard's perf record and log to
`perf/`, pools the perf records, writes the latency plot and `quality/quality.json`, and lists
every shard's packs in `staged.json` for publish (keys: cgan.layout.workspace). A shard without a
usable render.json is rendered here into packs in the workspace from its raw outputs when they
were all kept (keep_raw_outputs), else refused, naming the inference task to re-run. Work and
memory grow with the shards and packs, not the grids.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cgan.errors import InferenceError
from cgan.layout.published import LATENCY_PLOT_KEY, PERF_KEY, QUALITY_KEY
from cgan.layout.workspace import (
    PERF_PREFIX,
    RENDER_NAME,
    STAGED_KEY,
    output_key,
    published_shard_file_key,
    render_key,
    shard_perf_key,
)
from cgan.progress import is_tenth
from cgan.quality.gate import (
    FeatureExtractor,
    Thresholds,
    check_lines,
    diversity,
    evaluate,
    failures,
    load_reference,
)
from cgan.quality.report import DEFAULT_PARITY_GRIDS, EXPECTED_LABELS, QualityAccumulator, evenly_spaced
from cgan.recipe.grids import grid_array, png_bytes
from cgan.recipe.outputs import grid_stem, read_output_bin
from cgan.recipe.perf import aggregate
from cgan.recipe.perf_plot import latency_plot_png
from cgan.run.shard import Shard
from cgan.run.shard_inputs import fetch_input_bin
from cgan.run.shard_render import check_render
from cgan.run.staging import STAGED_VERSION, ShardPacker, WorkspacePacks

Log = Callable[[str], None]
# Grids rendered at a time on the fallback path: PNG encoding, the classifier and store I/O
# release the GIL, so this scales with the worker's cores (at least 2, at most 8).
POST_THREADS = max(2, min(8, os.cpu_count() or 2))


def parity_sample(shards: list[Shard], parity_grids: int = DEFAULT_PARITY_GRIDS) -> set[int]:
    """The grids checked for parity: those the plan named (cgan.run.plan.plan_shards), or
    `parity_grids` spread evenly over the run for shards made without them."""
    if all(s.parity is not None for s in shards):
        return {g for s in shards for g in s.parity or ()}
    return set(evenly_spaced(sum(s.count for s in shards), parity_grids))


def postprocess_run(
    store, shards: list[Shard], checkpoint: str | Path, *, parity_grids: int = DEFAULT_PARITY_GRIDS,
    log: Log = print, target: str = "cpu", precision_mode: str = "force_fp16", limits: Thresholds | None = None,
) -> dict:
    """Quality + perf for every shard of a run (grids too, for shards without a tally), and the
    quality gate's verdict on it (cgan.quality.gate; in quality.json and the summary as `gate`)."""
    total = sum(s.count for s in shards)
    features, feature_labels, extractor = [], [], FeatureExtractor()
    parity_at = parity_sample(shards, parity_grids)
    quality = QualityAccumulator(checkpoint)
    records, done, staged = [], 0, []
    store.delete_prefix(PERF_PREFIX)  # perf/ is made from this plan's shards alone: none of an earlier plan's
    with tempfile.TemporaryDirectory(prefix="cgan-post-") as tmp_dir:
        tmp = Path(tmp_dir)
        for shard in shards:
            index, prefix = shard.index, shard.outputs_prefix
            keys = set(store.list(prefix))
            local = tmp / prefix
            tally = _render_tally(store, keys, shard, quality.classifier_sha256, log)
            if tally is not None:  # grids and labels were made on the inference task's worker
                quality.merge(tally["correct"], tally["total"], tally["grids"], tally.get("row_sq"))
                done += tally["grids"]
                packs = tally["packs"]
                where = "staged in the publish bucket" if packs.get("bucket") else "in the workspace"
                log(f"grids {done}/{total} (shard {index}: {len(packs['packs'])} pack(s) {where})")
            else:
                missing = [output_key(index, g) for g in shard.grids if output_key(index, g) not in keys]
                if missing:
                    raise InferenceError(
                        f"shard {index} is incomplete: {len(missing)} of {shard.count} output bins missing "
                        f"in {prefix}/ (first: {Path(missing[0]).name}) and no usable {RENDER_NAME}; re-run "
                        "its inference task"
                    )
                done, packs = _render_shard(store, shard, local, quality, done, total, log)
            staged.append({"shard": index, **packs})
            for g in sorted(parity_at.intersection(shard.grids)):
                key = output_key(index, g)
                if key not in keys:
                    raise InferenceError(
                        f"shard {index}: the raw output of grid {g} (parity sample) is missing in {prefix}/; "
                        "re-run its inference task"
                    )
                out = store.get_file(key, local / Path(key).name)
                source = fetch_input_bin(store, shard, g, local / "bins" / f"{grid_stem(out)}.bin")
                quality.add_parity(out, source)
                features.append(extractor.features(read_output_bin(out)))
                feature_labels.append(EXPECTED_LABELS)
            shutil.rmtree(local, ignore_errors=True)
            _copy_perf(store, keys, shard)
            records.append(json.loads(store.get_bytes(shard_perf_key(index))))
    quality.precision = records[0].get("tool", {}).get("precision") if records else None
    report = quality.report()
    if features:
        report.update(diversity(np.concatenate(features), np.concatenate(feature_labels), load_reference()))
    verdict = evaluate(report, limits or Thresholds(), target=target, precision_mode=precision_mode)
    report["gate"] = verdict
    store.put_bytes(json.dumps({"version": STAGED_VERSION, "shards": staged}).encode(), STAGED_KEY)
    store.put_bytes(json.dumps(report, indent=2).encode(), QUALITY_KEY)
    perf = aggregate(records)
    store.put_bytes(json.dumps(perf, indent=2).encode(), PERF_KEY)
    store.put_bytes(latency_plot_png(records), LATENCY_PLOT_KEY)
    return {
        "grids": done,
        "label_accuracy": report["label_accuracy"],
        "parity_max_abs_err": report["parity_max_abs_err"],
        "precision": report["precision"],
        "grids_per_s": perf["grids_per_s"],
        "latency_ms_mean": perf["latency_ms"]["mean"],
        "backend": perf["backend"],
        "devices": perf["devices"],  # e.g. npu:0@host-a: where the shards ran (the manifest's summary)
        "gate": verdict["status"],
        "gate_failures": failures(verdict),
        "gate_checks": check_lines(verdict),  # every check, passed or not, for the quality_gate log
        "feature_diversity": report.get("feature_diversity"),
    }


def _render_shard(store, shard: Shard, local: Path, quality, done: int, total: int, log: Log) -> tuple[int, dict]:
    """Grids (into packs in the workspace) and label checks of a shard that has no usable
    render.json; the new count and the shard's packs entry."""
    index = shard.index
    packer = ShardPacker(WorkspacePacks(store), shard.start, shard.count, local / "packs")

    def grid_of(grid: int):
        """Fetch one output bin, pack its PNG, judge its digits."""
        key = output_key(index, grid)
        out = store.get_file(key, local / Path(key).name)
        packer.put(grid, png_bytes(grid_array(read_output_bin(out))))
        hits = quality.judge(out)
        out.unlink()
        return hits

    try:
        with ThreadPoolExecutor(max_workers=POST_THREADS, thread_name_prefix="post") as pool:
            for hits in pool.map(grid_of, shard.grids):
                quality.record(hits)
                done += 1
                if is_tenth(done, total):
                    log(f"grids {done}/{total}")
        return done, packer.finish()
    finally:
        packer.close()


def _copy_perf(store, keys: set[str], shard: Shard) -> None:
    """The shard's perf record and raw tool logs, to perf/shard_NNNN.<name>."""
    for key in sorted(keys):
        name = Path(key).name
        if not key.endswith(".bin") and name != RENDER_NAME:
            store.put_bytes(store.get_bytes(key), published_shard_file_key(shard.index, name))


def _render_tally(store, keys: set[str], shard: Shard, classifier_sha: str, log: Log) -> dict | None:
    """The shard's render.json when it is whole and its packs cover the shard (in the workspace,
    or staged in the publish bucket, where publish checks them), else None."""
    key = render_key(shard.index)
    if key not in keys:
        return None
    try:
        tally = json.loads(store.get_bytes(key))
    except ValueError:
        tally = None
    why = check_render(tally, shard, classifier_sha)
    if why is None and isinstance(tally, dict) and not tally["packs"].get("bucket"):  # packs in the workspace
        missing = [p["key"] for p in tally["packs"]["packs"] if not store.exists(p["key"])]
        why = f"{len(missing)} pack(s) missing (first: {missing[0]})" if missing else None
    if why is not None:
        log(f"shard {shard.index}: {key} not used ({why}); rendering its grids again")
        return None
    return tally

