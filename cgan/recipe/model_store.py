"""Exported models by content: one ONNX per checkpoint and export settings, reused by every run.

Key = sha256 of a canonical JSON of: the checkpoint's sha256, the export settings that shape the
file (batch, opset, simplify) and the versions of the exporting code (EXPORT_FORMAT, torch, onnx,
onnxsim). An entry is two objects under the artifact root (cgan.layout.workspace.model_prefix):

    models/<key>/cgan.onnx    the model, uploaded first
    models/<key>/entry.json   settings, versions, the ONNX's size and sha256; written last

An entry counts only when entry.json exists and the ONNX matches its size and sha256, so a crash
between the two writes, or a damaged file, is a miss (and is overwritten), never a bad hit: the
rule of cgan.storage.entry, shared with the atc conversion cache (cgan.ascend.atc_cache).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from cgan.layout.workspace import model_prefix
from cgan.storage.entry import fetch_entry, put_entry
from cgan.storage.files import sha256_file
from cgan.storage.keys import join
from cgan.storage.store import ArtifactStore

EXPORT_FORMAT = "cgan-onnx-v1"  # bump when cgan.recipe.export changes what it writes
ONNX_NAME = "cgan.onnx"
ENTRY_NAME = "entry.json"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def model_key(checkpoint_sha256: str, *, batch: int, opset: int, simplify: bool = True) -> str:
    canonical = json.dumps({
        "format": EXPORT_FORMAT, "checkpoint_sha256": checkpoint_sha256, "batch": batch, "opset": opset,
        "simplify": simplify, "tools": {p: _version(p) for p in ("torch", "onnx", "onnxsim")},
    }, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class ModelStore:
    """Exported ONNX files in an artifact store (cgan.storage.store LocalStore or S3Store), by content."""

    store: ArtifactStore

    def onnx_key(self, key: str) -> str:
        return join(model_prefix(key), ONNX_NAME)

    def entry_key(self, key: str) -> str:
        return join(model_prefix(key), ENTRY_NAME)

    def onnx_uri(self, key: str) -> str:
        return f"{self.store.uri.rstrip('/')}/{self.onnx_key(key)}"

    def fetch(self, key: str, dest: Path) -> dict | None:
        """The entry's metadata with its ONNX copied to dest and checked, or None (a miss)."""
        return fetch_entry(self.store, self.onnx_key(key), self.entry_key(key), dest,
                           size_field="onnx_bytes", sha_field="onnx_sha256")

    def put(self, key: str, onnx_path: Path, entry: dict) -> dict:
        """Store an exported ONNX under key, the entry (with size, sha256, created) last."""
        onnx_path = Path(onnx_path)
        entry = dict(entry, format=EXPORT_FORMAT, onnx_bytes=onnx_path.stat().st_size,
                     onnx_sha256=sha256_file(onnx_path),
                     created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        put_entry(self.store, onnx_path, self.onnx_key(key), entry, self.entry_key(key))
        return entry
