"""The conversion cache: an unchanged model on an unchanged toolkit never runs atc twice.

Key = sha256 of a canonical JSON of: the ONNX file's sha256, the path-free atc flags that shape
the om (AtcOptions.model_flags: framework, input format and shape, soc_version, output type,
precision mode; not --log), the toolkit version (cgan.ascend.toolkit) and the target
`<os>_<arch>` (cgan.ascend.target: atc builds for the host it runs on, and an om named
`_linux_<arch>` runs only there), so x86_64 and aarch64 workers sharing a cache never load each
other's oms. An entry is two objects in an artifact store (cgan.storage.store LocalStore or S3Store):

    <prefix>/<key>/model.om    the om, uploaded first
    <prefix>/<key>/entry.json  flags, versions, the om's size and sha256; written last

An entry counts only when entry.json exists, names this host's target (and its om's name names
no other) and the om matches its size and sha256, so a crash between the two writes, a damaged
om or an om for another architecture is a miss (and is overwritten), never a bad hit. A hit
restores the om under the name atc gave it (`cgan.om` or `cgan_linux_x86_64.om`).

A toolkit whose version could not be read (Toolkit.version "unknown": no version file in either
CANN layout, no version from `atc --version`) is never cached: atc runs, no entry is looked up or
stored (an upgrade could not invalidate it), the Conversion's cache_key is "" and its notes (and
the streamed log) say so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from cgan.ascend.atc import AtcOptions, LineSink, find_om, onnx_input_shape, run_atc
from cgan.ascend.errors import AscendError
from cgan.ascend.target import host_target, om_target
from cgan.ascend.toolkit import UNKNOWN_VERSION, Toolkit
from cgan.ascend.validate import check_path
from cgan.storage.entry import fetch_entry, put_entry
from cgan.storage.files import sha256_file
from cgan.storage.keys import join
from cgan.storage.store import ArtifactStore

CACHE_FORMAT = "cgan-atc-cache-v2"  # v2: the target OS/architecture is part of the key
DEFAULT_PREFIX = "atc-cache"
OM_NAME = "model.om"
ENTRY_NAME = "entry.json"
SUFFIX_RE = re.compile(r"^(?:_[a-z]+_[A-Za-z0-9_]+)?\Z")  # "" or "_linux_x86_64"


def cache_key(onnx_sha256: str, flags: list[str], toolkit_version: str, target: str) -> str:
    canonical = json.dumps({"format": CACHE_FORMAT, "onnx_sha256": onnx_sha256, "flags": flags,
                            "toolkit_version": toolkit_version, "target": target}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class AtcCache:
    store: ArtifactStore
    prefix: str = DEFAULT_PREFIX

    def keys(self, key: str) -> tuple[str, str]:
        base = join(self.prefix, key)
        return join(base, OM_NAME), join(base, ENTRY_NAME)

    def fetch(self, key: str, dest: Path, target: str) -> dict | None:
        """The entry's metadata with its om copied to dest, or None (a miss). An entry for
        another target than `target` (`<os>_<arch>`) is a miss."""
        def for_target(entry: dict) -> bool:
            named = om_target(str(entry.get("om_name", "")))
            return entry.get("target") == target and named in (None, target)

        om_key, entry_key = self.keys(key)
        return fetch_entry(self.store, om_key, entry_key, dest, size_field="om_bytes", sha_field="om_sha256",
                           accept=for_target)

    def put(self, key: str, om_path: Path, entry: dict) -> None:
        om_key, entry_key = self.keys(key)
        put_entry(self.store, om_path, om_key, entry, entry_key)


@dataclass
class Conversion:
    om_path: Path
    cache_hit: bool
    cache_key: str
    toolkit_version: str
    flags: list[str]
    log: str
    notes: list[str] = field(default_factory=list)


def convert(
    onnx_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: AtcOptions,
    *,
    toolkit: Toolkit,
    cache: AtcCache | None = None,
    name: str = "cgan",
    on_line: LineSink | None = None,
    timeout_s: float | None = None,
) -> Conversion:
    """run_atc behind the cache: a hit copies the stored om to `<out_dir>/<its name>`."""
    options.validate()
    onnx_path = check_path(onnx_path, "ONNX model")
    out_dir = check_path(out_dir, "output folder")
    if not onnx_path.is_file():
        raise AscendError(f"ONNX model {onnx_path} not found; create it with `cgan export`")
    flags = options.model_flags(onnx_input_shape(onnx_path))
    onnx_sha = sha256_file(onnx_path)
    target = host_target()
    key = cache_key(onnx_sha, flags, toolkit.version, target)
    notes = list(toolkit.notes)
    if toolkit.version == UNKNOWN_VERSION and cache is not None:
        cache, key = None, ""
        refused = ("conversion cache not used: the toolkit version is unknown (no version file under the "
                   "toolkit home, none from `atc --version`), so a toolkit upgrade could not invalidate "
                   "a cached om; atc runs and its om is not stored")
        notes.append(refused)
        if on_line:
            on_line(refused)
    if cache is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".{name}.cache.part"
        entry = cache.fetch(key, tmp, target)
        if entry is not None:
            suffix = entry.get("om_suffix", "")
            if not isinstance(suffix, str) or not SUFFIX_RE.fullmatch(suffix):
                suffix = ""
            for stale in find_om(out_dir, name):
                stale.unlink()
            om_path = out_dir / f"{name}{suffix}.om"
            os.replace(tmp, om_path)
            line = f"atc cache hit {key}: om from {entry.get('created', '?')}, atc not run"
            if on_line:
                on_line(line)
            return Conversion(om_path, True, key, toolkit.version, flags, line + "\n", notes)
    result = run_atc(onnx_path, out_dir, options, toolkit=toolkit, name=name, on_line=on_line,
                     timeout_s=timeout_s)
    notes += [n for n in result.notes if n not in notes]
    if cache is not None:
        cache.put(key, result.om_path, {
            "format": CACHE_FORMAT, "onnx_sha256": onnx_sha, "flags": flags,
            "toolkit_version": toolkit.version, "toolkit_version_source": toolkit.version_source,
            "target": target, "om_name": result.om_path.name,
            "om_suffix": result.om_path.name[len(name):-3], "om_bytes": result.om_path.stat().st_size,
            "om_sha256": sha256_file(result.om_path), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "atc_seconds": round(result.duration_s, 3),
        })
    return Conversion(result.om_path, False, key, toolkit.version, flags, result.log, notes)
