"""A checked store entry: a file plus its entry.json (the file's size and sha256), written last.

The one rule of the content-addressed caches (cgan.recipe.model_store, cgan.ascend.atc_cache): an entry
counts only when entry.json exists and the file matches the size and sha256 it records, so a crash
between the two writes, or a damaged file, is a miss (and is overwritten), never a bad hit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cgan.storage.files import sha256_file
from cgan.storage.keys import StoreError
from cgan.storage.store import ArtifactStore


def fetch_entry(store: ArtifactStore, file_key: str, entry_key: str, dest: Path, *, size_field: str,
                sha_field: str, accept: Callable[[dict], bool] | None = None) -> dict | None:
    """The entry's metadata with its file copied to dest and checked against entry[size_field] and
    entry[sha_field], or None (a miss: no entry, an unreadable one, one `accept` refuses, a damaged file)."""
    try:
        if not store.exists(entry_key):
            return None
        entry = json.loads(store.get_bytes(entry_key))
        if not isinstance(entry, dict) or (accept is not None and not accept(entry)):
            return None
        store.get_file(file_key, dest)
    except (StoreError, ValueError, AttributeError):
        return None
    if dest.stat().st_size != entry.get(size_field) or sha256_file(dest) != entry.get(sha_field):
        dest.unlink(missing_ok=True)
        return None
    return entry


def put_entry(store: ArtifactStore, path: Path, file_key: str, entry: dict, entry_key: str) -> None:
    """The file first, its entry.json last (so a crash in between leaves a miss, not a bad hit)."""
    store.put_file(path, file_key)
    store.put_bytes(json.dumps(entry, indent=2, sort_keys=True).encode(), entry_key)
