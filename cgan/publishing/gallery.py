"""Reading published runs back for the gallery (the Airflow UI page in plugins/cgan_gallery.py).

Works on a boto3 S3 client and a bucket laid out by `cgan.publishing.publish` (layout v2:
cgan.layout.published, packs: cgan.layout.packs). Requests go through the S3 adapter
cgan.storage.s3. No Airflow import here.

- `list_runs`: the published runs, newest first by logical date. A `runs/<name>/` prefix
  without a manifest is not published (or is being published) and is not listed. The listing
  is paginated and capped (`MAX_SCAN` prefixes looked at, `MAX_RUNS` runs returned).
- `load_run`: one run's manifest (without its object and pack lists), perf.json, quality.json and
  its grid count; grids are numbered 0..N-1, so a page of them is arithmetic.
- `open_grid`: one grid's PNG, by one ranged GET into its pack, checked against the pack's
  index (itself checked against the manifest's size and sha256, and cached: a bounded LRU).
  Grid n is found by bisecting the packs' first grids, never by a list of grids.
- `locate_grid`: where grid n lives (its pack's key, the tar member, offset, size, sha256) and
  the run's seed, from the pack's index alone (no PNG read): the grid page.
- `open_png`: a PNG object of a run (the latency plot), only when the manifest lists its key,
  so the gallery can never be used to read other objects of the bucket.
- `trend`: grids/s and label accuracy over the listed runs, oldest first, rejected runs marked.
- `param_rows`, `gate_checks`: the run's params as a person reads them (a null shown as the
  default the run used, where the run recorded it) and the quality gate's checks with their
  thresholds.

A manifest that lists no packs (version 1, one object per grid) is refused with a message that
says so: such a run is not listed, and its page says to re-publish it.

Memory stays bounded whatever the run's size: a manifest is O(packs) (a few MB at 10,000,000
grids), parsed manifests are kept as small summaries (LRU, revalidated by ETag) and as the
object and pack tables of a few recently viewed runs, and a few pack indexes.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

from cgan.errors import CganError
from cgan.layout import published as layout
from cgan.layout.packs import MAX_INDEX_BYTES, PackError, PackIndex, check_member
from cgan.layout.published import (
    LATENCY_PLOT_KEY,
    MAX_MANIFEST_BYTES,
    PERF_KEY,
    QUALITY_KEY,
    RUNS_PREFIX,
)
from cgan.storage import s3
from cgan.storage.keys import StoreError, check_bucket, check_key

MAX_RUNS = 200  # runs returned by list_runs
MAX_SCAN = 5000  # run prefixes looked at by list_runs
MAX_JSON_BYTES = 4 * 1024 * 1024  # perf.json, quality.json
MAX_PNG_BYTES = 32 * 1024 * 1024
HEAD_WORKERS = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OBJECT_KEYS = "_object_keys"  # in a cached manifest (its object list dropped): keys outside its root
PACKS = "_packs"  # in a cached manifest (its pack list dropped): its RunPacks
MAX_INDEXES = 64  # pack indexes cached (about 110 KB each)


class GalleryError(CganError):
    """The published runs cannot be read as asked (a published object is damaged or too large)."""

    retryable = False


class NotFound(GalleryError):
    """No such published run, or an object its manifest does not list."""


class Missing(GalleryError):
    """An object the manifest lists is not in the bucket (the run is being re-published)."""


class StoreUnavailable(GalleryError):
    """The object store refused or failed a request."""

    retryable = True


@dataclass(frozen=True)
class RunSummary:
    """One published run, as the index lists it (from its manifest's top-level fields)."""

    name: str  # the <name> of runs/<name>/: what URLs use
    run_id: str  # the Airflow run id (free text: escape it)
    logical_date: str | None
    published_at: str | None
    grids: int | None
    grids_per_s: float | None
    latency_ms_mean: float | None
    label_accuracy: float | None
    parity_max_abs_err: float | None
    backend: str | None
    target: str | None
    objects: int
    status: str = "accepted"  # the quality gate's verdict (cgan.quality.gate): accepted or rejected
    gate_failures: tuple[str, ...] = ()  # what a rejected run missed: metric, value, threshold

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.name)


@dataclass
class RunList:
    runs: list[RunSummary]  # newest first, at most `limit`
    unpublished: list[str]  # prefixes without a manifest (not published, or being published)
    unreadable: list[tuple[str, str]]  # (prefix name, why) of manifests that could not be read
    scanned: int  # run prefixes looked at
    more_runs: bool  # more published runs than `limit`: the oldest were left out
    more_prefixes: bool  # more prefixes than `max_scan`: some were not looked at


@dataclass(frozen=True)
class PackRef:
    """One pack of a run, as its manifest lists it (cgan.layout.packs)."""

    first: int
    count: int
    key: str
    size: int
    sha256: str
    index_key: str
    index_size: int
    index_sha256: str


@dataclass(frozen=True)
class RunPacks:
    """A run's packs in grid order; `firsts[i]` is the first grid of `refs[i]`."""

    refs: tuple[PackRef, ...]
    firsts: tuple[int, ...]
    grids: int  # grids 0..grids-1

    def locate(self, grid: int) -> PackRef | None:
        """The pack holding `grid` (O(log packs)), None when the run has no such grid."""
        if isinstance(grid, bool) or not isinstance(grid, int) or not 0 <= grid < self.grids:
            return None
        return self.refs[bisect.bisect_right(self.firsts, grid) - 1]


@dataclass
class RunDetail:
    summary: RunSummary
    manifest: dict  # the manifest without its object and pack lists
    grids: int  # grids 0..grids-1, in `packs`
    packs: int
    images: list[str]  # every PNG object the manifest lists (the latency plot), relative keys
    perf: dict | None
    quality: dict | None
    total_bytes: int
    problems: list[str] = field(default_factory=list)  # perf/quality listed but unreadable

    @property
    def has_latency_plot(self) -> bool:
        return LATENCY_PLOT_KEY in self.images


@dataclass(frozen=True)
class TrendPoint:
    name: str
    run_id: str
    logical_date: str | None
    grids_per_s: float | None
    label_accuracy: float | None
    when: datetime | None = None  # the x of the point: its logical date (else publish time)
    kind: str = "manual"  # nightly (a scheduled run) or manual (triggered, or by an asset event)
    status: str = "accepted"  # the quality gate's verdict: accepted or rejected


@dataclass
class PngObject:
    """An image streamed from the store: iterate `chunks()` once, then it is closed."""

    key: str
    size: int
    etag: str | None
    body: Any

    def chunks(self, size: int = 64 * 1024) -> Iterator[bytes]:
        try:
            first = True
            for chunk in self.body.iter_chunks(size):
                if first and chunk:
                    if not chunk.startswith(PNG_SIGNATURE[: len(chunk)]):
                        raise GalleryError(f"{self.key} is not a PNG")
                    first = False
                yield chunk
        finally:
            self.body.close()

    def read(self) -> bytes:
        return b"".join(self.chunks())


def check_run_name(name: str) -> str:
    """A run is named by the one key part under runs/ (the publish task's safe run id)."""
    try:
        return layout.check_run_name(name)
    except StoreError as exc:
        raise NotFound(str(exc)) from None


def manifest_key(name: str) -> str:
    return layout.manifest_key(check_run_name(name))


class ManifestCache:
    """Parsed manifests, revalidated by ETag.

    `summaries`: small per-run summaries (up to `max_summaries`), each checked against the
    manifest's ETag on every listing. `objects`: the key -> size maps of the `max_runs` most
    recently viewed runs, trusted for `ttl_s` seconds before their ETag is checked again
    (the image endpoint asks for a run's map once per image).
    """

    def __init__(self, max_summaries: int = 4096, max_runs: int = 8, ttl_s: float = 30.0,
                 max_indexes: int = MAX_INDEXES):
        self.max_summaries = max_summaries
        self.max_runs = max_runs
        self.ttl_s = ttl_s
        self.max_indexes = max_indexes
        self._summaries: OrderedDict[tuple, tuple[str, RunSummary]] = OrderedDict()
        self._runs: OrderedDict[tuple, tuple[str, float, dict, dict[str, int], RunSummary]] = OrderedDict()
        self._indexes: OrderedDict[tuple, PackIndex] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._summaries.clear()
            self._runs.clear()
            self._indexes.clear()

    def index(self, client, bucket: str, pack: PackRef) -> PackIndex:
        """The pack's index, read once and checked against the manifest's size and sha256 (and
        its pack's size and sha256 against the manifest's); the `max_indexes` last used are kept."""
        cid = (*self._id(client, bucket, pack.index_key), pack.index_sha256)
        with self._lock:
            hit = self._indexes.get(cid)
            if hit is not None:
                self._indexes.move_to_end(cid)
                return hit
        if pack.index_size > MAX_INDEX_BYTES:
            raise GalleryError(f"s3://{bucket}/{pack.index_key} has {pack.index_size} bytes in the manifest, more "
                               f"than the {MAX_INDEX_BYTES} a pack index may have")
        try:
            data, _ = s3.get_bytes(client, bucket, pack.index_key, MAX_INDEX_BYTES)
        except s3.S3Missing:
            raise Missing(f"s3://{bucket}/{pack.index_key} is listed in the manifest but missing: the run is "
                          "being re-published, try again shortly") from None
        except s3.S3Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        if len(data) != pack.index_size or hashlib.sha256(data).hexdigest() != pack.index_sha256:
            raise GalleryError(f"s3://{bucket}/{pack.index_key} does not match the manifest's size and sha256: it "
                               "was replaced or damaged; the gallery does not serve its grids")
        try:
            index = PackIndex.from_json(data, first=pack.first, count=pack.count)
        except PackError as exc:
            raise GalleryError(f"s3://{bucket}/{pack.index_key}: {exc}") from None
        if index.size != pack.size or index.sha256 != pack.sha256:
            raise GalleryError(f"s3://{bucket}/{pack.index_key} is the index of another pack than the manifest's "
                               f"{pack.key} (size {index.size} vs {pack.size}, or another sha256)")
        with self._lock:
            self._indexes[cid] = index
            while len(self._indexes) > self.max_indexes:
                self._indexes.popitem(last=False)
        return index

    def forget_run(self, client, bucket: str, name: str) -> None:
        """Drop a run's cached tables: the next request reads its manifest again."""
        with self._lock:
            self._runs.pop(self._id(client, bucket, manifest_key(name)), None)

    @staticmethod
    def _id(client, bucket: str, key: str) -> tuple:
        return (getattr(getattr(client, "meta", None), "endpoint_url", None), bucket, key)

    def summary(self, client, bucket: str, name: str, etag: str) -> RunSummary:
        cid = self._id(client, bucket, manifest_key(name))
        with self._lock:
            hit = self._summaries.get(cid)
            if hit and hit[0] == etag:
                self._summaries.move_to_end(cid)
                return hit[1]
        etag, manifest = _read_manifest(client, bucket, name)
        _run_packs(name, manifest)  # a manifest the run page would refuse is not listed either
        _run_objects(name, manifest)
        summary = _summarize(name, manifest)
        self._remember_summary(cid, etag, summary)
        return summary

    def run(self, client, bucket: str, name: str) -> tuple[dict, dict[str, int], RunSummary]:
        """(manifest without objects, relative key -> size, summary) of a published run."""
        cid = self._id(client, bucket, manifest_key(name))
        now = time.monotonic()
        with self._lock:
            hit = self._runs.get(cid)
            if hit and now - hit[1] < self.ttl_s:
                self._runs.move_to_end(cid)
                return hit[2], hit[3], hit[4]
        etag = _head_etag(client, bucket, manifest_key(name))
        if etag is None:
            with self._lock:
                self._runs.pop(cid, None)
            raise NotFound(f"run {name!r} is not published (no {manifest_key(name)})")
        if hit and hit[0] == etag:
            meta, objects, summary = hit[2], hit[3], hit[4]
        else:
            etag, manifest = _read_manifest(client, bucket, name)
            packs = _run_packs(name, manifest)
            objects, keys = _run_objects(name, manifest)
            summary = _summarize(name, manifest)
            meta = {k: v for k, v in manifest.items() if k not in ("objects", "packs")}
            meta[OBJECT_KEYS] = keys
            meta[PACKS] = packs
            del manifest
            self._remember_summary(cid, etag, summary)
        with self._lock:
            self._runs[cid] = (etag, now, meta, objects, summary)
            self._runs.move_to_end(cid)
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        return meta, objects, summary

    def _remember_summary(self, cid: tuple, etag: str, summary: RunSummary) -> None:
        with self._lock:
            self._summaries[cid] = (etag, summary)
            self._summaries.move_to_end(cid)
            while len(self._summaries) > self.max_summaries:
                self._summaries.popitem(last=False)


DEFAULT_CACHE = ManifestCache()


def list_runs(client, bucket: str, *, limit: int = MAX_RUNS, max_scan: int = MAX_SCAN,
              cache: ManifestCache = DEFAULT_CACHE) -> RunList:
    """The published runs of the bucket, newest first by logical date (at most `limit`)."""
    check_bucket(bucket)
    names, more_prefixes, unsafe = _run_prefixes(client, bucket, max_scan)
    runs: list[RunSummary] = []
    unpublished: list[str] = []
    unreadable: list[tuple[str, str]] = [(n, "not a name the publish task writes") for n in unsafe]

    def look(name: str):
        try:
            etag = _head_etag(client, bucket, manifest_key(name))
            if etag is None:
                return name, None, None
            return name, cache.summary(client, bucket, name, etag), None
        except GalleryError as exc:
            return name, None, exc
        except Exception as exc:  # noqa: BLE001 - one malformed manifest must not take the index down
            return name, None, GalleryError(f"its manifest cannot be summarised ({type(exc).__name__}: {exc})"[:300])

    failures: list[StoreUnavailable] = []
    with ThreadPoolExecutor(max_workers=HEAD_WORKERS, thread_name_prefix="cgan-gallery") as pool:
        for name, summary, problem in pool.map(look, names):
            if problem is not None:
                unreadable.append((name, str(problem)))
                if isinstance(problem, StoreUnavailable):
                    failures.append(problem)
            elif summary is None:
                unpublished.append(name)
            else:
                runs.append(summary)
    if names and len(failures) == len(names):  # the store refuses every read: say so, not "no runs"
        raise failures[0]
    runs.sort(key=lambda r: (_sort_time(r), r.name), reverse=True)
    return RunList(runs=runs[:limit], unpublished=unpublished, unreadable=unreadable, scanned=len(names),
                   more_runs=len(runs) > limit, more_prefixes=more_prefixes)


def load_run(client, bucket: str, name: str, *, cache: ManifestCache = DEFAULT_CACHE) -> RunDetail:
    """One published run: its manifest (less the object list), perf and quality reports."""
    check_bucket(bucket)
    meta, objects, summary = cache.run(client, bucket, check_run_name(name))
    problems: list[str] = []
    reports: dict[str, dict | None] = {}
    for rel in (PERF_KEY, QUALITY_KEY):
        reports[rel] = None
        if rel in objects:
            try:
                reports[rel] = _get_json(client, bucket, _object_key(meta, name, rel), MAX_JSON_BYTES)
            except NotFound:
                problems.append(f"{rel} is listed in the manifest but missing from the bucket")
            except GalleryError as exc:
                problems.append(str(exc))
    images = sorted(k for k in objects if k.endswith(".png"))
    packs: RunPacks = meta[PACKS]
    return RunDetail(
        summary=summary, manifest={k: v for k, v in meta.items() if k not in (OBJECT_KEYS, PACKS)},
        grids=packs.grids, packs=len(packs.refs), images=images,
        perf=reports[PERF_KEY], quality=reports[QUALITY_KEY],
        total_bytes=sum(objects.values()) + sum(p.size + p.index_size for p in packs.refs), problems=problems,
    )


@dataclass(frozen=True)
class GridImage:
    """One grid's PNG, read from its pack and checked against the pack's index."""

    grid: int
    data: bytes  # empty when not_modified
    etag: str  # the member's sha256: the same grid of the same pack is the same image
    not_modified: bool = False  # the caller's if_none_match is this image: nothing was read


def open_grid(client, bucket: str, name: str, grid: int, *, cache: ManifestCache = DEFAULT_CACHE,
              if_none_match: str | None = None) -> GridImage:
    """Grid `grid` of a published run: its pack's index (cached), then one ranged GET, checked
    against the index's size and sha256. With `if_none_match` equal to the grid's sha256 (its
    ETag) nothing is read past the index. A pack or index gone from the bucket (a re-publish
    replaced the run since its manifest was cached) reads the manifest again, once."""
    check_bucket(bucket)
    check_run_name(name)
    try:
        return _open_grid(client, bucket, name, grid, cache, if_none_match)
    except Missing:
        cache.forget_run(client, bucket, name)
        return _open_grid(client, bucket, name, grid, cache, if_none_match)


def _pack_of(packs: RunPacks, name: str, grid: int):
    """The pack that holds `grid`; NotFound naming the run's grid numbers when none does."""
    pack = packs.locate(grid)
    if pack is None:
        has = f"its grids are numbered 0..{packs.grids - 1}" if packs.grids else "it has no grids"
        raise NotFound(f"run {name!r} has no grid {grid!r}: {has}")
    return pack


def _open_grid(client, bucket: str, name: str, grid: int, cache: ManifestCache,
               if_none_match: str | None) -> GridImage:
    meta, _, _ = cache.run(client, bucket, name)
    packs: RunPacks = meta[PACKS]
    pack = _pack_of(packs, name, grid)
    index = cache.index(client, bucket, pack)
    member = index.member(grid)
    if if_none_match is not None and member.sha256 == if_none_match:
        return GridImage(grid, b"", member.sha256, not_modified=True)
    try:
        data = s3.get_range(client, bucket, pack.key, member.offset, member.size)
    except s3.S3Missing:
        raise Missing(f"s3://{bucket}/{pack.key} is listed in the manifest but missing: the run is being "
                      "re-published, try again shortly") from None
    except s3.S3Error as exc:
        raise StoreUnavailable(str(exc)) from exc
    try:
        check_member(index, grid, data)
    except PackError as exc:
        raise GalleryError(f"s3://{bucket}/{pack.key}: {exc}; the gallery does not serve it") from None
    if not data.startswith(PNG_SIGNATURE):
        raise GalleryError(f"{member.name} of s3://{bucket}/{pack.key} is not a PNG")
    return GridImage(grid, data, member.sha256)


@dataclass(frozen=True)
class GridPlace:
    """Where one grid of a published run lives, as its pack's index says (the grid page)."""

    summary: RunSummary
    grid: int
    grids: int  # the run's grids are 0..grids-1
    seed: int | None  # the run's params.seed: grid g's inputs are drawn from PCG64 seeded with [seed, g]
    pack_key: str  # the tar in the bucket
    pack_first: int
    pack_count: int
    member: str  # grid_NNNNNNNN.png: the tar member
    offset: int  # of the member's data in the tar
    size: int
    sha256: str


def locate_grid(client, bucket: str, name: str, grid: int, *, cache: ManifestCache = DEFAULT_CACHE) -> GridPlace:
    """Where grid `grid` of a published run lives: its pack, the member, its bytes in the tar
    (from the pack's index, cached; the PNG itself is not read), and the run's seed."""
    check_bucket(bucket)
    check_run_name(name)
    try:
        return _locate_grid(client, bucket, name, grid, cache)
    except Missing:
        cache.forget_run(client, bucket, name)
        return _locate_grid(client, bucket, name, grid, cache)


def _locate_grid(client, bucket: str, name: str, grid: int, cache: ManifestCache) -> GridPlace:
    meta, _, summary = cache.run(client, bucket, name)
    packs: RunPacks = meta[PACKS]
    pack = _pack_of(packs, name, grid)
    member = cache.index(client, bucket, pack).member(grid)  # the index names it grid_NNNNNNNN.png (checked)
    seed = _dict(meta.get("params")).get("seed")
    return GridPlace(summary=summary, grid=grid, grids=packs.grids, seed=seed if _is_int(seed) else None,
                     pack_key=pack.key, pack_first=pack.first, pack_count=pack.count, member=member.name,
                     offset=member.offset, size=member.size, sha256=member.sha256)


def open_png(client, bucket: str, name: str, rel_key: str, *, cache: ManifestCache = DEFAULT_CACHE) -> PngObject:
    """A PNG of a published run, streamed; only a key its manifest lists is served."""
    check_bucket(bucket)
    check_run_name(name)
    try:
        check_key(rel_key)
    except StoreError:
        raise NotFound(f"{rel_key!r} is not an object of run {name!r}") from None
    if not rel_key.endswith(".png"):
        raise NotFound(f"{rel_key!r} is not an image of run {name!r}")
    meta, objects, _ = cache.run(client, bucket, name)
    if rel_key not in objects:
        raise NotFound(f"{rel_key!r} is not listed in the manifest of run {name!r}")
    key = _object_key(meta, name, rel_key)
    response = _get_object(client, bucket, key)
    size = response.get("ContentLength")
    if size != objects[rel_key] or size is None or size > MAX_PNG_BYTES:
        response["Body"].close()
        raise GalleryError(f"s3://{bucket}/{key} has {size} bytes, its manifest says {objects[rel_key]}: "
                           "the run is being re-published, try again shortly")
    return PngObject(key=key, size=size, etag=response.get("ETag"), body=response["Body"])


def run_kind(run_id: str) -> str:
    """nightly for a run the schedule made (Airflow's run id `scheduled__...`), else manual."""
    return "nightly" if run_id.startswith("scheduled__") else "manual"


def trend(runs: list[RunSummary], kind: str = "all") -> list[TrendPoint]:
    """Throughput and label accuracy of the runs, oldest first, placed by time; `kind` keeps only
    nightly or manual runs (all: both)."""
    if kind not in ("all", "nightly", "manual"):
        raise ValueError(f"kind must be all, nightly or manual, got {kind!r}")
    ordered = sorted(runs, key=lambda r: (_sort_time(r), r.name))
    return [TrendPoint(r.name, r.run_id, r.logical_date, r.grids_per_s, r.label_accuracy, _sort_time(r),
                       run_kind(r.run_id), r.status) for r in ordered if kind in ("all", run_kind(r.run_id))]


# -- what a run's records mean to a person ---------------------------------------------------

@dataclass(frozen=True)
class ParamRow:
    """One of the run's params as the run page shows it."""

    name: str
    value: str  # as shown: a null is "default (0.90)" where the run recorded the value it used
    note: str = ""  # "default" when the value given is the plan's default; else what the value means
    given: bool = True  # False for a null: `value` says what the run used in its place


def param_rows(params: dict, *, defaults: dict | None = None, quality: dict | None = None,
               perf: dict | None = None, derived_seed: int | None = None,
               unused: dict[str, str] | None = None) -> list[ParamRow]:
    """The manifest's params as a person reads them. A null (the form left empty) is shown as
    what the run used where the run recorded it: the gate thresholds from the quality report's
    verdict (quality.json `gate.thresholds`), the shard count from perf.json, the devices the
    shards ran on; `false`/`true` as no/yes. `defaults`: the plan's defaults (a value equal to
    its default is noted so); `derived_seed`: the seed the plan derives from the logical date
    (a seed equal to it was not typed); `unused`: params the run's target does not use, with
    the note to show (e.g. "not used on cpu")."""
    defaults, unused = defaults or {}, unused or {}
    gate = _dict(_dict(quality).get("gate"))
    limits = _dict(gate.get("thresholds"))
    perf = _dict(perf)
    rows = []
    for key, value in params.items():
        name, note = str(key), ""
        if value is None:
            used: object = None
            if name.startswith("gate_"):
                used = limits.get(name.removeprefix("gate_"))
                shown = f"default ({_plain(used)})" if _num(used) is not None else "default"
            elif name == "grids_per_shard":
                used = perf.get("shards")
                shown = f"automatic ({used:,} shard{'s' if used != 1 else ''})" if _is_int(used) else "automatic"
            elif name == "devices":
                used = perf.get("devices")
                ran = ", ".join(str(d) for d in used) if isinstance(used, list) and used else None
                shown = f"any (ran on {ran})" if ran else "any"
            else:
                shown = "default"
        else:
            shown = _plain(value)
            if name == "seed" and derived_seed is not None and value == derived_seed:
                note = "derived from the logical date"
            elif name in defaults and _same(defaults[name], value):
                note = "default"
        if name in unused:
            note = unused[name]
        rows.append(ParamRow(name, shown, note, given=value is not None))
    return rows


@dataclass(frozen=True)
class GateCheck:
    """One check of the quality gate's verdict (quality.json `gate.checks`, cgan.quality.gate)."""

    metric: str
    value: float | None
    op: str  # ">=" or "<="
    threshold: float | None
    passed: bool
    why: str = ""


def gate_checks(quality: dict | None) -> list[GateCheck]:
    """The quality gate's checks recorded in the quality report, each with value and threshold
    (none for a report made before the gate recorded them)."""
    checks = []
    for check in _list(_dict(_dict(quality).get("gate")).get("checks")):
        if not isinstance(check, dict) or not isinstance(check.get("metric"), str):
            continue
        op = check["op"] if check.get("op") in (">=", "<=") else "?"
        checks.append(GateCheck(check["metric"], _num(check.get("value")), op, _num(check.get("threshold")),
                                check.get("passed") is True, _str(check.get("why")) or ""))
    return checks


def _plain(value: object) -> str:
    """A param's value as text: no/yes for false/true, lists comma-joined, numbers as written."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):  # a threshold: 0.9 -> 0.90
        return f"{value:.2f}" if round(value, 2) == value else repr(value)
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _same(default: object, value: object) -> bool:
    return type(default) is type(value) and default == value


# -- reading the store ------------------------------------------------------------------------

def _run_prefixes(client, bucket: str, max_scan: int) -> tuple[list[str], bool, list[str]]:
    names: list[str] = []
    unsafe: list[str] = []
    try:
        for name in s3.list_folders(client, bucket, RUNS_PREFIX):
            try:
                names.append(check_run_name(name))
            except NotFound:
                if len(unsafe) < 100:
                    unsafe.append(name)
            if len(names) >= max_scan:
                return names, True, unsafe
    except s3.S3Error as exc:
        raise StoreUnavailable(str(exc)) from exc
    return names, False, unsafe


def _head_etag(client, bucket: str, key: str) -> str | None:
    try:
        found = s3.head(client, bucket, key)
    except s3.S3Error as exc:
        raise StoreUnavailable(str(exc)) from exc
    if found is None:
        return None
    return found.get("ETag") or f"{found.get('ContentLength')}:{found.get('LastModified')}"


def _get_object(client, bucket: str, key: str) -> dict:
    try:
        return s3.get(client, bucket, key)
    except s3.S3Missing:
        raise NotFound(f"s3://{bucket}/{key} does not exist") from None
    except s3.S3Error as exc:
        raise StoreUnavailable(str(exc)) from exc


def _get_json(client, bucket: str, key: str, limit: int) -> dict:
    return _read_json(client, bucket, key, limit)[1]


def _read_json(client, bucket: str, key: str, limit: int) -> tuple[str | None, dict]:
    response = _get_object(client, bucket, key)
    size = response.get("ContentLength") or 0
    try:
        if size > limit:
            raise GalleryError(f"s3://{bucket}/{key} has {size} bytes, more than the {limit} the gallery reads")
        data = response["Body"].read(limit + 1)
    except GalleryError:
        raise
    except Exception as exc:
        raise StoreUnavailable(str(s3.wrap(exc, f"cannot read s3://{bucket}/{key}"))) from exc
    finally:
        response["Body"].close()
    if len(data) > limit:
        raise GalleryError(f"s3://{bucket}/{key} is larger than the {limit} bytes the gallery reads")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GalleryError(f"s3://{bucket}/{key} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise GalleryError(f"s3://{bucket}/{key} is not a JSON object")
    return response.get("ETag"), obj


def _read_manifest(client, bucket: str, name: str) -> tuple[str, dict]:
    key = manifest_key(name)
    try:
        etag, manifest = _read_json(client, bucket, key, MAX_MANIFEST_BYTES)
    except NotFound:
        raise NotFound(f"run {name!r} is not published (no {key})") from None
    return etag or "", manifest


def _run_objects(name: str, manifest: dict) -> tuple[dict[str, int], dict[str, str]]:
    """(relative key -> size, relative key -> full key) of the manifest's objects in runs/<name>/;
    the second holds only the objects outside the manifest's root (under attempts of their own).
    GalleryError when the manifest names no attempt of the run as its root."""
    try:
        root = layout.objects_root(manifest, layout.run_prefix(name))
    except StoreError as exc:
        raise GalleryError(f"{exc}: re-publish the run") from None
    found = layout.relative_objects(manifest, layout.run_prefix(name))
    return ({rel: size for rel, (_, size) in found.items()},
            {rel: key for rel, (key, _) in found.items() if key != f"{root}/{rel}"})


def _run_packs(name: str, manifest: dict) -> RunPacks:
    """The manifest's packs; GalleryError when they are not the run's grids 0..N-1 (or a manifest
    of version 1, which lists no packs)."""
    try:
        packs = layout.manifest_packs(manifest, layout.run_prefix(name))
    except StoreError as exc:
        raise GalleryError(str(exc)) from None
    refs = tuple(PackRef(p["first"], p["count"], p["key"], p["size"], p["sha256"], p["index"]["key"],
                         p["index"]["size"], p["index"]["sha256"]) for p in packs)
    grids = refs[-1].first + refs[-1].count if refs else 0
    if _is_int(manifest.get("grids")) and manifest["grids"] != grids:
        raise GalleryError(f"the manifest of {layout.run_prefix(name)} says {manifest['grids']} grids, its packs "
                           f"hold {grids}: re-publish the run")
    return RunPacks(refs, tuple(p.first for p in refs), grids)


def _object_key(meta: dict, name: str, rel: str) -> str:
    """The full key of one of a run's objects (meta: the cached manifest without its object list)."""
    return meta.get(OBJECT_KEYS, {}).get(rel) or f"{layout.objects_root(meta, layout.run_prefix(name))}/{rel}"


def _summarize(name: str, manifest: dict) -> RunSummary:
    summary = _dict(manifest.get("summary"))
    params = _dict(manifest.get("params"))
    objects, packs = manifest.get("objects"), manifest.get("packs")
    grids = manifest.get("grids") if _is_int(manifest.get("grids")) else summary.get("grids")
    return RunSummary(
        name=name,
        run_id=_str(manifest.get("run_id")) or name,
        logical_date=_str(manifest.get("logical_date")),
        published_at=_str(manifest.get("published_at")),
        grids=grids if _is_int(grids) else None,
        grids_per_s=_num(summary.get("grids_per_s")),
        latency_ms_mean=_num(summary.get("latency_ms_mean")),
        label_accuracy=_num(summary.get("label_accuracy")),
        parity_max_abs_err=_num(summary.get("parity_max_abs_err")),
        backend=_str(summary.get("backend")),
        target=_str(params.get("target")),
        objects=(len(objects) if isinstance(objects, list) else 0) + 2 * (len(packs) if isinstance(packs, list) else 0),
        status="rejected" if manifest.get("status") == "rejected" else "accepted",
        gate_failures=tuple(f for f in _list(summary.get("gate_failures")) if isinstance(f, str)),
    )


def _sort_time(run: RunSummary) -> datetime:
    for value in (run.logical_date, run.published_at):
        if value:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        return None


def _str(value) -> str | None:
    return value if isinstance(value, str) and value else None
