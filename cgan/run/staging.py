"""One shard try's grids as packs (cgan.layout.packs), built and uploaded while the run computes.

A `ShardPacker` takes each grid's PNG as it is rendered, writes it into its pack (a tar in the
task's temp folder), and when a pack is whole hands it to one upload thread while the next pack
fills, so neither the runtime nor the renderer waits for the store. Where the pack goes is its
sink: `BucketPacks` stages it in the publish bucket under a fresh attempt of the try's own
(cgan.layout.published.attempt_root, keys of cgan.layout.packs: nothing there is published
until a manifest names it), `WorkspacePacks` puts it into the run's workspace (the `cgan` command line, or
postprocess re-rendering a shard). The protocol around it is told in docs/data-layout.md.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from cgan.errors import InferenceError
from cgan.layout.packs import PACK_GRIDS, PackIndex, PackWriter, index_key, pack_key, pack_ranges
from cgan.layout.published import attempt_root, new_attempt_id
from cgan.layout.workspace import STAGED_VERSION
from cgan.storage import s3
from cgan.storage.keys import check_bucket, check_key, join

MAX_PACKS_IN_FLIGHT = 2  # packs written but not yet uploaded: memory and disk stay flat


class BucketPacks:
    """Packs staged in the publish bucket under one fresh attempt of the run."""

    def __init__(self, client, bucket: str, run_prefix: str):
        self.client = client
        self.bucket = check_bucket(bucket)
        self.run_prefix = check_key(run_prefix)
        self.attempt = new_attempt_id()
        self.root = attempt_root(run_prefix, self.attempt)

    def where(self) -> str:
        return f"s3://{self.bucket}/{self.root}/"

    def put(self, path: Path, index: PackIndex) -> dict:
        """Upload a pack (multipart past 8 MiB, each part's SHA-256 checked by the server), then its
        index; the manifest entry of both."""
        tar, idx = join(self.root, pack_key(index.first)), join(self.root, index_key(index.first))
        s3.upload_file(self.client, self.bucket, tar, path, content_type="application/x-tar", threads=False)
        stored = s3.head(self.client, self.bucket, tar) or {}
        if stored.get("ContentLength") != index.size:
            raise InferenceError(f"s3://{self.bucket}/{tar} has {stored.get('ContentLength')} bytes after upload, "
                                 f"expected {index.size}: the store lost part of it; the task's retry stages it again")
        body = index.to_json()
        s3.put_bytes(self.client, self.bucket, idx, body, content_type="application/json")
        return pack_entry(tar, idx, index, body)

    def record(self) -> dict:
        return {"bucket": self.bucket, "root": self.root}


class WorkspacePacks:
    """Packs put into the run's workspace (keys cgan.layout.packs, relative to the workspace)."""

    def __init__(self, store):
        self.store = store

    def where(self) -> str:
        return "the workspace"

    def put(self, path: Path, index: PackIndex) -> dict:
        tar, idx = pack_key(index.first), index_key(index.first)
        self.store.put_file(path, tar)
        body = index.to_json()
        self.store.put_bytes(body, idx)
        return pack_entry(tar, idx, index, body)

    def record(self) -> dict:
        return {"bucket": None, "root": None}


def pack_entry(tar_key: str, index_key_: str, index: PackIndex, index_body: bytes) -> dict:
    """A pack as render.json, staged.json and the manifest list it."""
    import hashlib

    return {"key": tar_key, "size": index.size, "sha256": index.sha256, "first": index.first, "count": index.count,
            "index": {"key": index_key_, "size": len(index_body), "sha256": hashlib.sha256(index_body).hexdigest()}}


class ShardPacker:
    """The packs of one shard try: PNGs in (any order), whole packs out to `sink` on one upload
    thread, at most MAX_PACKS_IN_FLIGHT waiting. Thread-safe."""

    def __init__(self, sink, start: int, count: int, work_dir: str | Path, *, pack_grids: int = PACK_GRIDS):
        self.sink = sink
        self.work_dir = Path(work_dir)
        self.ranges = pack_ranges(start, count, pack_grids)
        self._writers: dict[int, PackWriter] = {}
        self._lock = threading.Lock()
        self._uploads: list[Future] = []
        self._slots = threading.BoundedSemaphore(MAX_PACKS_IN_FLIGHT)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pack-upload")
        self.cpu_s = {"pack": 0.0, "upload": 0.0}
        self._mtime = int(time.time())

    def _range_of(self, grid: int) -> range:
        lo, hi = 0, len(self.ranges) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            r = self.ranges[mid]
            if grid < r.start:
                hi = mid - 1
            elif grid >= r.stop:
                lo = mid + 1
            else:
                return r
        raise InferenceError(f"grid {grid} is not a grid of this shard")

    def put(self, grid: int, png: bytes) -> None:
        """One grid's PNG; a pack it completes is closed and queued for upload."""
        self._raise_if_failed()
        t0 = time.thread_time()
        r = self._range_of(grid)
        with self._lock:
            writer = self._writers.get(r.start)
            if writer is None:
                writer = self._writers[r.start] = PackWriter(self.work_dir / f"pack_{r.start}.tar", r.start, len(r),
                                                             mtime=self._mtime)
            whole = writer.add(grid, png)
            index = writer.finish() if whole else None
            self.cpu_s["pack"] += time.thread_time() - t0
        if index is not None:
            self._slots.acquire()
            try:
                future = self._pool.submit(self._upload, writer.path, index)
            except BaseException:  # closed meanwhile (close): nothing will upload it
                self._dropped(writer.path)
                raise
            future.add_done_callback(partial(self._if_cancelled, writer.path))
            self._uploads.append(future)

    def _if_cancelled(self, path: Path, future: Future) -> None:
        if future.cancelled():  # by close: _upload never ran to free them
            self._dropped(path)

    def _dropped(self, path: Path) -> None:
        """A whole pack that will not be uploaded: its file and its slot go."""
        path.unlink(missing_ok=True)
        self._slots.release()

    def _upload(self, path: Path, index: PackIndex) -> dict:
        try:
            t0 = time.thread_time()
            entry = self.sink.put(path, index)
            with self._lock:
                self.cpu_s["upload"] += time.thread_time() - t0
            return entry
        finally:
            path.unlink(missing_ok=True)
            self._slots.release()

    def _raise_if_failed(self) -> None:
        for future in self._uploads:
            if future.done() and future.exception() is not None:
                raise InferenceError(f"uploading a pack to {self.sink.where()} failed: {future.exception()}") \
                    from future.exception()

    def finish(self) -> dict:
        """Wait for every upload; the `packs` entry of the shard's render.json."""
        missing = [r for r in self.ranges if r.start not in self._writers or not self._writers[r.start].done]
        if missing:
            self.close()
            raise InferenceError(f"{len(missing)} pack(s) of the shard are incomplete (first: grids "
                                 f"{missing[0].start}..{missing[0].stop - 1})")
        self._pool.shutdown(wait=True)
        self._raise_if_failed()
        entries = sorted((f.result() for f in self._uploads), key=lambda e: e["first"])
        return {"version": STAGED_VERSION, **self.sink.record(), "packs": entries}

    def close(self) -> None:
        """Stop without uploading what is left (a no-op after finish)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for writer in self._writers.values():
            if not writer.done:
                writer.abort()


def check_packs(packs, start: int, count: int, run_prefix: str | None = None) -> str | None:
    """Why a render.json's `packs` entry does not cover grids start..start+count-1 (None when it does)."""
    if not isinstance(packs, dict) or packs.get("version") != STAGED_VERSION:
        return "unknown packs entry"
    entries, root = packs.get("packs"), packs.get("root")
    if not isinstance(entries, list) or not entries:
        return "no packs listed"
    if packs.get("bucket") is not None:
        if not isinstance(root, str) or (run_prefix is not None and not root.startswith(f"{run_prefix}/attempts/")):
            return f"packs staged under {root!r}, not under an attempt of {run_prefix}"
    elif root is not None:
        return f"packs in the workspace with a root ({root!r:.80})"
    expect = start
    for entry in entries:
        if not isinstance(entry, dict) or not _entry_ok(entry):
            return f"bad pack entry {entry!r:.80}"
        if entry["first"] != expect:
            return f"the packs do not cover grid {expect}"
        keys = (pack_key(expect), index_key(expect))  # where the sink put them (BucketPacks, WorkspacePacks)
        if root is not None:
            keys = (join(root, keys[0]), join(root, keys[1]))
        if (entry["key"], entry["index"]["key"]) != keys:
            return f"pack {entry['key']!r:.120} of grid {expect} is not {keys[0]}"
        expect += entry["count"]
    if expect != start + count:
        return f"the packs cover grids {start}..{expect - 1}, the shard is {start}..{start + count - 1}"
    return None


def _entry_ok(entry: dict) -> bool:
    index = entry.get("index")

    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    return (isinstance(entry.get("key"), str) and whole(entry.get("size")) and whole(entry.get("first"))
            and whole(entry.get("count")) and entry["count"] > 0 and _sha(entry.get("sha256"))
            and isinstance(index, dict) and isinstance(index.get("key"), str) and whole(index.get("size"))
            and _sha(index.get("sha256")))


def _sha(value) -> bool:
    return isinstance(value, str) and len(value) == 64
