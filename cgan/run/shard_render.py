"""Grids and label checks of one shard, made on the inference task's own worker.

A `ShardRenderer` takes each output as the runtime writes it (ONNX Runtime), or every output
after a tool that writes them at the end (msame: `render_outputs`, on several threads once the
NPU is free). Its threads encode each grid's PNG, hand it to the shard's packer
(cgan.run.staging.ShardPacker: packs uploaded while the next fills) and have the classifier judge
the grids of the label sample. At most `max_pending` outputs wait, so memory stays flat whatever
the shard size. `finish()` returns the shard's tally, and `hand_over` stores it as render.json,
last, after the raw outputs of the run's parity sample, perf.json and the tool's log.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cgan.errors import InferenceError
from cgan.layout.tensors import NUM_CLASSES, SAMPLES_PER_GRID
from cgan.layout.workspace import grid_name, render_key, shard_file_key
from cgan.quality.classifier import DEFAULT_CLASSIFIER
from cgan.quality.report import QualityAccumulator
from cgan.recipe.grids import grid_array, png_bytes
from cgan.recipe.outputs import grid_stem, list_outputs, read_output_bin
from cgan.run.shard import Shard
from cgan.run.staging import check_packs

RENDER_VERSION = 2  # 2: the grids are in packs (render.json `packs`)
MAX_PENDING = 8
# Threads that render outputs already on disk (the ascend task): PNG encoding and the classifier
# release the GIL, so this scales with the worker's cores (at least 2, at most 8).
RENDER_THREADS = max(2, min(8, os.cpu_count() or 2))


class ShardRenderer:
    """Renders and judges outputs on one background thread; errors surface in submit/finish."""

    def __init__(self, packer, classifier_path=DEFAULT_CLASSIFIER, *, max_pending: int = MAX_PENDING,
                 threads: int = 1, judge: set[str] | None = None):
        self.packer = packer  # cgan.run.staging.ShardPacker: where the PNGs go
        self.judge = judge  # stems of the grids whose digits are judged (None: every grid)
        self.labels = QualityAccumulator(None, classifier_path)  # label counts; no parity here
        self.grids = 0
        self.first: int | None = None
        self.last: int | None = None
        self._slots = threading.BoundedSemaphore(max(max_pending, threads))
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render")
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        # CPU seconds of this renderer's threads per part (thread_time: this thread's CPU only).
        self.cpu_s = {"render": 0.0, "judge": 0.0}

    def __enter__(self) -> ShardRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, output: Path, samples: np.ndarray) -> None:
        """Queue one written output (blocks while `max_pending` are waiting)."""
        self._raise_if_failed()
        self._slots.acquire()
        try:
            self._pool.submit(self._render, Path(output), samples)
        except BaseException:
            self._slots.release()
            raise

    def _render(self, output: Path, samples: np.ndarray) -> None:
        try:
            if self._error is not None:
                return
            stem = grid_stem(output)
            grid = grid_number(stem)
            t0 = time.thread_time()
            png = png_bytes(grid_array(samples))
            t1 = time.thread_time()
            self.packer.put(grid, png)  # its own CPU is counted by the packer
            t2 = time.thread_time()
            hits = self.labels.judge_samples(samples) if self.judge is None or stem in self.judge else None
            t3 = time.thread_time()
            with self._lock:
                self.labels.record(hits)
                self.grids += 1
                self.first = grid if self.first is None else min(self.first, grid)
                self.last = grid if self.last is None else max(self.last, grid)
                for part, secs in (("render", t1 - t0), ("judge", t3 - t2)):
                    self.cpu_s[part] += secs
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc
        finally:
            self._slots.release()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise InferenceError(f"rendering grids failed: {self._error}") from self._error

    def finish(self) -> dict:
        """Wait for every queued output; the shard's tally (the content of render.json)."""
        self._pool.shutdown(wait=True)
        self._raise_if_failed()
        packs = self.packer.finish()
        return {
            "version": RENDER_VERSION,
            "packs": packs,
            "grids": self.grids,
            "first": None if self.first is None else grid_name(self.first),
            "last": None if self.last is None else grid_name(self.last),
            "judged": int(self.labels.total.sum()) // SAMPLES_PER_GRID,
            "row_sq": self.labels.row_sq,
            "correct": self.labels.correct.tolist(),
            "total": self.labels.total.tolist(),
            "classifier_sha256": self.labels.classifier_sha256,
        }

    def close(self) -> None:
        """Stop without waiting for queued work (a no-op after finish)."""
        self._error = self._error or InferenceError("renderer closed")
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.packer.close()


def grid_number(stem: str) -> int:
    """42 of `grid_00000042` (an output's stem); InferenceError for another name."""
    digits = stem[len("grid_"):]
    if not stem.startswith("grid_") or not digits.isdigit():
        raise InferenceError(f"{stem!r} is not the stem of a grid's output: the runtime wrote a foreign file")
    return int(digits)


def render_outputs(packer, outputs: list[Path], *, threads: int = RENDER_THREADS,
                   progress=None, judge: set[str] | None = None) -> dict:
    """PNGs (into `packer`) and the tally of output bins already written (msame's), on `threads`."""
    with ShardRenderer(packer, threads=threads, judge=judge) as renderer:
        for n, path in enumerate(outputs, 1):
            renderer.submit(path, read_output_bin(path))
            if progress is not None:
                progress(n, len(outputs))
        return renderer.finish()


def hand_over(store, shard: Shard, run_dir: Path, tally: dict, files: Sequence[Path] = ()) -> dict:
    """Upload a finished shard's raw outputs of the parity sample (all with keep_raw_outputs),
    `files` (perf.json, the tool's log) and, last, render.json; returns what was uploaded."""
    index, names = shard.index, shard.handed_stems
    uploaded, size = 0, 0
    for path in list_outputs(run_dir):
        if names is None or grid_stem(path) in names:
            store.put_file(path, shard_file_key(index, path.name))
            uploaded, size = uploaded + 1, size + path.stat().st_size
    if names is not None and uploaded != len(names):
        raise InferenceError(f"shard {index}: {len(names) - uploaded} output(s) of the parity sample "
                             f"were not written in {run_dir}")
    for path in files:
        store.put_file(path, shard_file_key(index, Path(path).name))
        size += Path(path).stat().st_size
    body = json.dumps(tally).encode()
    store.put_bytes(body, render_key(index))
    return {"raw_outputs": uploaded, "bytes": size + len(body)}


def check_render(tally: dict, shard: Shard, classifier_sha256: str, run_prefix: str | None = None) -> str | None:
    """Why a shard's render.json cannot be used (None when it can): its tally or its packs (which
    must cover the shard, staged under an attempt of `run_prefix` when in the publish bucket)."""
    if not isinstance(tally, dict) or tally.get("version") != RENDER_VERSION:
        return "unknown render.json version"
    if tally.get("classifier_sha256") != classifier_sha256:
        return "rendered with another classifier"
    if tally.get("grids") != shard.count:
        return f"{tally.get('grids')} grids rendered, the shard has {shard.count}"
    first, last = grid_name(shard.grids[0]), grid_name(shard.grids[-1])
    if (tally.get("first"), tally.get("last")) != (first, last):
        return f"rendered {tally.get('first')}..{tally.get('last')}, the shard is {first}..{last}"
    for field in ("correct", "total"):
        values = tally.get(field)
        if not (isinstance(values, list) and len(values) == NUM_CLASSES
                and all(isinstance(v, int) and v >= 0 for v in values)):
            return f"bad {field!r} counts"
    judged = tally.get("judged")  # grids judged: at least the shard's label sample
    need = shard.count if shard.judge is None else len(shard.judge)
    if not isinstance(judged, int) or not need <= judged <= shard.count:
        return f"{judged!r} grids judged, the shard's label sample has {need}"
    if sum(tally["total"]) != judged * SAMPLES_PER_GRID or any(
            c > t for c, t in zip(tally["correct"], tally["total"], strict=True)):
        return "counts do not add up"
    return check_packs(tally.get("packs"), shard.start, shard.count, run_prefix)
