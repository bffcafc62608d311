"""Grids and label checks of one shard, made while its inference runs (the streamed postprocess).

The inference task hands each output to a `ShardRenderer` as soon as it is written. One worker
thread encodes the grid's PNG into the workspace (`grids/<stem>.png`) and has the classifier
judge its 100 digits, so the core a 1-thread runtime leaves idle does the postprocessing while
the next grid is computed. At most `max_pending` outputs wait, so memory stays flat whatever
the shard size. `finish()` returns the shard's tally, stored as `render.json` beside the shard's
outputs; postprocess merges it instead of rendering the shard again.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cgan.classifier import DEFAULT_CLASSIFIER
from cgan.errors import InferenceError
from cgan.grids import grid_array, png_bytes
from cgan.layout import NUM_CLASSES, SAMPLES_PER_GRID
from cgan.outputs import grid_stem
from cgan.quality import QualityAccumulator

RENDER_NAME = "render.json"
RENDER_VERSION = 1
MAX_PENDING = 8


class ShardRenderer:
    """Renders and judges outputs on one background thread; errors surface in submit/finish."""

    def __init__(self, store, classifier_path=DEFAULT_CLASSIFIER, *, max_pending: int = MAX_PENDING):
        self.store = store
        self.labels = QualityAccumulator(None, classifier_path)  # label counts; no parity here
        self.stems: list[str] = []
        self._slots = threading.BoundedSemaphore(max_pending)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        self._error: BaseException | None = None

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
            self.store.put_bytes(png_bytes(grid_array(samples)), f"grids/{stem}.png")
            self.labels.record(self.labels.judge_samples(samples))
            self.stems.append(stem)
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
        return {
            "version": RENDER_VERSION,
            "grids": len(self.stems),
            "first": min(self.stems, default=None),
            "last": max(self.stems, default=None),
            "correct": self.labels.correct.tolist(),
            "total": self.labels.total.tolist(),
            "classifier_sha256": self.labels.classifier_sha256,
        }

    def close(self) -> None:
        """Stop without waiting for queued work (the task failed anyway)."""
        self._error = self._error or InferenceError("renderer closed")
        self._pool.shutdown(wait=False, cancel_futures=True)


def check_render(tally: dict, shard: dict, classifier_sha256: str) -> str | None:
    """Why a shard's render.json cannot be used (None when it can)."""
    from cgan.bins import bin_name

    if not isinstance(tally, dict) or tally.get("version") != RENDER_VERSION:
        return "unknown render.json version"
    if tally.get("classifier_sha256") != classifier_sha256:
        return "rendered with another classifier"
    if tally.get("grids") != shard["count"]:
        return f"{tally.get('grids')} grids rendered, the shard has {shard['count']}"
    first = bin_name(shard["start"])[:-4]
    last = bin_name(shard["start"] + shard["count"] - 1)[:-4]
    if (tally.get("first"), tally.get("last")) != (first, last):
        return f"rendered {tally.get('first')}..{tally.get('last')}, the shard is {first}..{last}"
    for field in ("correct", "total"):
        values = tally.get(field)
        if not (isinstance(values, list) and len(values) == NUM_CLASSES
                and all(isinstance(v, int) and v >= 0 for v in values)):
            return f"bad {field!r} counts"
    if sum(tally["total"]) != shard["count"] * SAMPLES_PER_GRID or any(
            c > t for c, t in zip(tally["correct"], tally["total"], strict=True)):
        return "counts do not add up"
    return None
