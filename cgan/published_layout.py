"""The published layout: the one home of every key name in the publish bucket.

    latest.json                                     pointer: {"manifest": <key>, "logical_date", ...}
    runs/<name>/manifest.json                       the run's manifest, switched last (one PUT)
    runs/<name>/attempts/<attempt>/grids/*.png      the objects of one publish attempt
    runs/<name>/attempts/<attempt>/perf/*
    runs/<name>/attempts/<attempt>/quality/quality.json

Every publish writes its objects under a fresh attempt prefix and then replaces the run's
manifest in one PUT, so a reader always sees either the old manifest with the old attempt's
objects or the new manifest with the new ones: a re-publish never takes a published run
offline. The manifest names its attempt in `root`; runs published before attempts existed
keep their objects directly under `runs/<name>/` (no `root`), and readers accept both.
No Airflow import here.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import TypeGuard

from cgan.store import KEY_PART_RE, StoreError, check_key, join

RUNS_PREFIX = "runs/"
MANIFEST_NAME = "manifest.json"
LATEST_KEY = "latest.json"
ATTEMPTS_DIR = "attempts"
SECTIONS = ("grids", "perf", "quality")
GRIDS_DIR = "grids/"
PERF_KEY = "perf/perf.json"
QUALITY_KEY = "quality/quality.json"
LATENCY_PLOT_KEY = "perf/latency.png"
PROBE_PREFIX = ".cgan-probe/"  # scratch keys of the capability probe (cgan.s3.probe), deleted after use


def check_run_name(name: str) -> str:
    """A run is named by the one key part under runs/; ValueError otherwise."""
    if not isinstance(name, str) or name in (".", "..") or not KEY_PART_RE.match(name) or len(name) > 255:
        raise ValueError(f"{name!r} is not the name of a published run")
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


def relative_objects(manifest: dict, prefix: str) -> dict[str, tuple[str, int]]:
    """relative key (grids/grid_000000.png) -> (full key, size) of the manifest's well-formed
    objects that lie under its root; anything else it lists is ignored."""
    root = objects_root(manifest, prefix) + "/"
    found: dict[str, tuple[str, int]] = {}
    entries = manifest.get("objects")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        key, size = entry.get("key"), entry.get("size")
        if not isinstance(key, str) or not key.startswith(root) or not _is_size(size):
            continue
        rel = key[len(root):]
        try:
            check_key(rel)
        except StoreError:
            continue
        found[rel] = (key, size)
    return found


def _is_size(value) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
