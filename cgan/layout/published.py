"""The published layout: the one home of every key name in the publish bucket.

    latest.json                                         pointer: {"manifest": <key>, "logical_date", ...}
    runs/<name>/manifest.json                           the run's manifest (version 2), switched last (one PUT)
    runs/<name>/attempts/<shard attempt>/packs/pack_NNNNNNNN.tar, .json   a shard try's grid packs + indexes
    runs/<name>/attempts/<attempt>/perf/*               the reports of one publish attempt
    runs/<name>/attempts/<attempt>/quality/quality.json

A manifest names its reports in `objects` and its grids in `packs` (cgan.layout.packs), each
under the attempt that wrote it; an object's name within the run is what follows
`attempts/<attempt>/`. The protocol (attempts, the manifest last, what readers may rely on) is
told in docs/data-layout.md. No Airflow import here.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import TypeGuard

from cgan.storage.keys import KEY_PART_RE, StoreError, check_key, join

RUNS_PREFIX = "runs/"
MANIFEST_NAME = "manifest.json"
LATEST_KEY = "latest.json"
ATTEMPTS_DIR = "attempts"
MANIFEST_VERSION = 2  # 2: grids in packs (cgan.layout.packs), listed in `packs`
SECTIONS = ("perf", "quality")  # the workspace sections a publish copies into its attempt
PERF_KEY = "perf/perf.json"
QUALITY_KEY = "quality/quality.json"
LATENCY_PLOT_KEY = "perf/latency.png"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # O(packs): a 10,000,000-grid run has a ~4 MB manifest


def check_run_name(name: str) -> str:
    """A run is named by the one key part under runs/; StoreError otherwise."""
    if not isinstance(name, str) or name in (".", "..") or not KEY_PART_RE.match(name) or len(name) > 255:
        raise StoreError(f"{name!r} is not the name of a published run: a run name is one key part under "
                         f"{RUNS_PREFIX} (1 to 255 letters, digits and ._=+@-, not '.' or '..'): "
                         "pick the run from the gallery's list of runs")
    return name


def run_prefix(name: str) -> str:
    return f"{RUNS_PREFIX}{check_run_name(name)}"


def manifest_key(name: str) -> str:
    return f"{run_prefix(name)}/{MANIFEST_NAME}"


def manifest_key_of(prefix: str) -> str:
    """The manifest key of a run prefix as the publish task is given it (e.g. runs/<name>)."""
    return join(check_key(prefix), MANIFEST_NAME)


def new_attempt_id(now: datetime | None = None) -> str:
    """Sortable by time (microseconds, UTC), unique by a random tail: 20261126T020000.123456Z-1a2b3c."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(3)}"


ATTEMPT_RE = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}")  # what new_attempt_id makes
# What cgan writes under an attempt: packs and their indexes, perf files, the quality report
ATTEMPT_OBJECT_RE = re.compile(r"packs/pack_\d{8}\.(?:tar|json)|perf/[A-Za-z0-9._=@-]+|quality/quality\.json")


def is_own_key(prefix: str, key: str) -> bool:
    """Whether `key` is one cgan writes under the run prefix's attempts (by pattern): what a sweep
    may delete. The manifest is not (it is never swept), nor is anything else under the prefix."""
    head = f"{prefix}/{ATTEMPTS_DIR}/"
    if not key.startswith(head):
        return False
    attempt, _, rest = key[len(head):].partition("/")
    return bool(ATTEMPT_RE.fullmatch(attempt) and ATTEMPT_OBJECT_RE.fullmatch(rest))


def attempt_root(prefix: str, attempt: str) -> str:
    return join(check_key(prefix), ATTEMPTS_DIR, check_key(attempt))


def attempt_of(prefix: str, key: str) -> str | None:
    """The attempt id of a key under prefix/attempts/<id>/..., None for any other key."""
    head = f"{prefix}/{ATTEMPTS_DIR}/"
    if not key.startswith(head):
        return None
    attempt, _, rest = key[len(head):].partition("/")
    return attempt if rest else None


def objects_root(manifest: dict, prefix: str) -> str:
    """The publish attempt the manifest's reports lie under (its `root`); StoreError when the
    manifest names none under this run."""
    root = manifest.get("root")
    if not isinstance(root, str) or not root.startswith(f"{prefix}/{ATTEMPTS_DIR}/"):
        raise StoreError(f"the manifest of {prefix} names no attempt of the run as its root ({root!r})")
    return check_key(root)


def relative_objects(manifest: dict, prefix: str) -> dict[str, tuple[str, int]]:
    """relative key (perf/perf.json) -> (full key, size) of the manifest's well-formed `objects`
    under any attempt of the run (relative key: what follows `<prefix>/attempts/<id>/`); anything
    else it lists is ignored, and of two objects with one relative key the first listed counts."""
    found: dict[str, tuple[str, int]] = {}
    entries = manifest.get("objects")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        key, size = entry.get("key"), entry.get("size")
        if not isinstance(key, str) or not _is_size(size):
            continue
        rel = _relative_key(prefix, key)
        if rel is not None and rel not in found:
            found[rel] = (key, size)
    return found


def manifest_packs(manifest: dict, prefix: str) -> list[dict]:
    """The manifest's packs, checked: each under an attempt of the run, with its index, and
    together grids 0..N-1 in order (StoreError naming the first that is not)."""
    packs = manifest.get("packs")
    if not isinstance(packs, list):
        raise StoreError(f"the manifest of {prefix} lists no packs (version {manifest.get('version')!r}; this "
                         f"reader knows version {MANIFEST_VERSION}): re-publish the run")
    expect = 0
    for pack in packs:
        index = pack.get("index") if isinstance(pack, dict) else None
        ok = (isinstance(pack, dict) and isinstance(index, dict) and _is_size(pack.get("first"))
              and pack["first"] == expect
              and _is_size(pack.get("count")) and pack["count"] > 0 and _is_size(pack.get("size"))
              and _is_size(index.get("size")) and isinstance(pack.get("sha256"), str)
              and isinstance(index.get("sha256"), str)
              and all(isinstance(k, str) and attempt_of(prefix, k) is not None for k in (pack.get("key"),
                                                                                          index.get("key"))))
        if not ok:
            raise StoreError(f"the manifest of {prefix}: pack entry {pack!r:.120} is not the pack of grid {expect}")
        expect += pack["count"]
    return packs


def manifest_keys(manifest: dict, prefix: str) -> set[str]:
    """Every key the manifest names under the run's prefix, objects, packs and their indexes (what
    a re-publish must not delete); whatever the manifest's version or shape."""
    keys = set()
    for field in ("objects", "packs"):
        entries = manifest.get(field)
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            index = entry.get("index")
            for key in (entry.get("key"), index.get("key") if isinstance(index, dict) else None):
                if isinstance(key, str) and key.startswith(f"{prefix}/"):
                    keys.add(key)
    return keys


def _relative_key(prefix: str, key: str) -> str | None:
    attempt = attempt_of(prefix, key)
    if attempt is None:
        return None
    rel = key[len(f"{prefix}/{ATTEMPTS_DIR}/{attempt}/"):]
    try:
        return check_key(rel)
    except StoreError:
        return None


def _is_size(value) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
