"""Grid PNGs staged in the publish bucket by the inference tasks, while the run still computes.

Each inference task try that is given the publish bucket uploads every grid PNG, as it is
rendered, under a fresh attempt of its own in the run's prefix (keys: cgan.layout.published,
`grid_key` under `attempt_root`; attempt ids sort by time, so a shard's attempt is older than the
publish attempt that later names it). Nothing marks the run published: readers only follow a
manifest, and the manifest is still written last by publish (cgan.publishing.publish), after it has
checked every staged object by listing each shard attempt (one ListObjectsV2 per 1,000 grids,
not a HEAD per grid). The shard's render.json records the attempt root and the size and sha256
of each PNG (`staged`); postprocess accepts the shard when that list is whole, then writes the
run's list of accepted shards (cgan.layout.workspace STAGED_KEY) for publish.

Uploads go through the one S3 adapter (cgan.storage.s3.put_bytes: Content-MD5 and SHA-256 checked by
the server). The leftovers of a failed or retried try lie in an attempt that no manifest names:
publish removes them with the run's older attempts (cgan.publishing.publish), and a run that never
publishes is removed from the bucket by a later run's cleanup after the workspace retention
(cgan.publishing.publish.remove_unpublished_runs). No Airflow import here.
"""

from __future__ import annotations

import hashlib
import threading

from cgan.layout.published import attempt_root, grid_key, new_attempt_id
from cgan.storage import s3
from cgan.storage.keys import check_bucket, check_key

STAGED_VERSION = 1


class GridStager:
    """Uploads one shard try's PNGs under a fresh attempt of the run; thread-safe."""

    def __init__(self, client, bucket: str, run_prefix: str):
        self.client = client
        self.bucket = check_bucket(bucket)
        self.run_prefix = check_key(run_prefix)
        self.attempt = new_attempt_id()
        self.root = attempt_root(run_prefix, self.attempt)
        self._grids: dict[str, list] = {}
        self._lock = threading.Lock()

    def put(self, stem: str, png: bytes) -> None:
        """One grid's PNG, verified by the server; remembered with its size and sha256."""
        s3.put_bytes(self.client, self.bucket, grid_key(self.root, stem), png, content_type="image/png")
        with self._lock:
            self._grids[stem] = [len(png), hashlib.sha256(png).hexdigest()]

    def record(self) -> dict:
        """The `staged` entry of the shard's render.json."""
        with self._lock:
            grids = dict(sorted(self._grids.items()))
        return {"version": STAGED_VERSION, "bucket": self.bucket, "root": self.root, "grids": grids}


def check_staged(staged, stems: list[str], run_prefix: str | None = None) -> str | None:
    """Why a render.json's `staged` entry cannot be used for these grid stems (None when it can)."""
    if not isinstance(staged, dict) or staged.get("version") != STAGED_VERSION:
        return "unknown staged entry"
    root, grids = staged.get("root"), staged.get("grids")
    if not isinstance(root, str) or not isinstance(grids, dict):
        return "staged entry without root or grids"
    if run_prefix is not None and not root.startswith(f"{run_prefix}/attempts/"):
        return f"grids staged under {root}, not under an attempt of {run_prefix}"
    missing = [s for s in stems if s not in grids]
    if missing:
        return f"{len(missing)} grid(s) not staged (first: {missing[0]})"
    if len(grids) != len(stems):
        return f"{len(grids)} grids staged, the shard has {len(stems)}"
    for stem in stems:
        entry = grids[stem]
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int) and entry[0] > 0
                and isinstance(entry[1], str) and len(entry[1]) == 64):
            return f"bad staged entry for {stem}"
    return None
