"""The published layout: the one home of every key name in the publish bucket.

    latest.json                                     pointer: {"manifest": <key>, "logical_date", ...}
    runs/<name>/manifest.json                       the run's manifest, switched last (one PUT)
    runs/<name>/attempts/<attempt>/grids/*.png      the objects of one publish attempt
    runs/<name>/attempts/<attempt>/perf/*
    runs/<name>/attempts/<attempt>/quality/quality.json

Every publish writes its objects under a fresh attempt prefix and then replaces the run's
manifest in one PUT, so a reader always sees either the old manifest with the old attempt's
objects or the new manifest with the new ones: a re-publish never takes a published run
offline. The inference tasks stage their grid PNGs the same way, each try under an attempt of
its own (`runs/<name>/attempts/<shard attempt>/grids/...`, cgan.run.staging), while the run is still
computing; the manifest names them where they lie. So an object's key relative to the run is
what follows `attempts/<attempt>/`, whichever attempt holds it. The manifest names the publish
attempt in `root`; runs published before attempts existed keep their objects directly under
`runs/<name>/` (no `root`), and readers accept both. No Airflow import here.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import TypeGuard

from cgan.storage.keys import KEY_PART_RE, StoreError, check_key, join

RUNS_PREFIX = "runs/"
MANIFEST_NAME = "manifest.json"
LATEST_KEY = "latest.json"
ATTEMPTS_DIR = "attempts"
SECTIONS = ("grids", "perf", "quality")
GRIDS_DIR = "grids/"
PERF_KEY = "perf/perf.json"
QUALITY_KEY = "quality/quality.json"
LATENCY_PLOT_KEY = "perf/latency.png"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # a 100,000-grid run has a ~15 MB manifest


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
    """The prefix the manifest's objects lie under: its `root` when that is an attempt of this
    run, else the run prefix itself (runs published before attempts existed)."""
    root = manifest.get("root")
    if isinstance(root, str) and root.startswith(f"{prefix}/{ATTEMPTS_DIR}/"):
        try:
            return check_key(root)
        except StoreError:
            pass
    return prefix


def grid_key(root: str, stem: str) -> str:
    """A grid PNG under an attempt root: `<root>/grids/grid_000042.png`."""
    return join(root, f"{GRIDS_DIR}{check_key(stem)}.png")


def relative_objects(manifest: dict, prefix: str) -> dict[str, tuple[str, int]]:
    """relative key (grids/grid_000000.png) -> (full key, size) of the manifest's well-formed
    objects: those under any attempt of the run (relative key: what follows
    `<prefix>/attempts/<id>/`), or, for a manifest without an attempt root (published before
    attempts existed), those right under the run prefix. Anything else it lists is ignored, and
    of two objects with one relative key the first listed counts."""
    legacy = objects_root(manifest, prefix) == prefix
    found: dict[str, tuple[str, int]] = {}
    entries = manifest.get("objects")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        key, size = entry.get("key"), entry.get("size")
        if not isinstance(key, str) or not _is_size(size):
            continue
        rel = _relative_key(prefix, key, legacy)
        if rel is not None and rel not in found:
            found[rel] = (key, size)
    return found


def manifest_keys(manifest: dict, prefix: str) -> set[str]:
    """Every key the manifest names under the run's prefix (what a re-publish must not delete)."""
    entries = manifest.get("objects")
    keys = set()
    for entry in entries if isinstance(entries, list) else []:
        key = entry.get("key") if isinstance(entry, dict) else None
        if isinstance(key, str) and key.startswith(f"{prefix}/"):
            keys.add(key)
    return keys


def _relative_key(prefix: str, key: str, legacy: bool) -> str | None:
    attempt = attempt_of(prefix, key)
    if attempt is not None:
        rel = key[len(f"{prefix}/{ATTEMPTS_DIR}/{attempt}/"):]
    elif legacy and key.startswith(f"{prefix}/"):
        rel = key[len(prefix) + 1:]
    else:
        return None
    try:
        return check_key(rel)
    except StoreError:
        return None


def _is_size(value) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
