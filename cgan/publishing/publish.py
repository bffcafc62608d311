"""Publishing a finished run to object storage without an offline window.

`publish_run` checks that every pack the inference tasks staged in the bucket is there with its
size (one listing per shard attempt), copies what lies in the workspace (the reports, and packs
of shards rendered there) to a fresh attempt of the run, then replaces the run's manifest in one
PUT (conditional where the server honours it), then moves `latest.json` unless the quality gate
rejected the run, then deletes what no manifest names. `remove_unpublished_runs` is the cleanup
of runs that never got a manifest. The protocol and its guarantees are told in
docs/data-layout.md and docs/reliability.md; key names are cgan.layout.published's.

Wrong credentials or a missing bucket raise PublishConfigError (a retry cannot help); a store
that is down or failing, or a lost race for the run's manifest, raises PublishError (a retry may).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cgan.errors import CganError
from cgan.layout.packs import PACKS_DIR
from cgan.layout.published import (
    LATENCY_PLOT_KEY,
    LATEST_KEY,
    MANIFEST_VERSION,
    MAX_MANIFEST_BYTES,
    PERF_KEY,
    QUALITY_KEY,
    RUNS_PREFIX,
    SECTIONS,
    attempt_of,
    attempt_root,
    is_own_key,
    manifest_key_of,
    manifest_keys,
    new_attempt_id,
)
from cgan.progress import is_tenth
from cgan.storage import s3
from cgan.storage.keys import check_bucket, check_key, join

LATEST_NAME = LATEST_KEY  # the name callers of this module know it by; the key lives in published_layout
MULTIPART_THRESHOLD = 8 * 1024 * 1024
PUBLISH_THREADS = 8
LATEST_TRIES = 5

Log = Callable[[str], None]


class PublishError(CganError):
    """The object store refused or lost an upload; nothing was marked published."""


class PublishConfigError(PublishError):
    """The object store refused the credentials or has no such bucket: fix the configuration."""

    retryable = False


class StagedGridsError(PublishError):
    """A pack staged by an inference task is missing, short, or staged elsewhere: a retry of
    publish cannot help, the shard's inference task must run again."""

    retryable = False


@dataclass
class Published:
    bucket: str
    prefix: str
    manifest_key: str
    objects: int
    bytes: int
    root: str = ""  # the attempt prefix the objects lie under
    conditional: bool = False  # the manifest and latest.json were written with conditional writes
    status: str = "accepted"  # the quality gate's verdict (cgan.quality.gate); a rejected run leaves latest.json
    packs: int = 0

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"


def publish_run(
    workspace, client, bucket: str, run_prefix: str, *, metadata: dict, log: Log = print,
    tmp_dir: str | Path, planned: dict[int, tuple[int, int]] | None = None,
) -> Published:
    """Check the staged packs, copy the workspace's packs, perf/ and quality/ to a new attempt
    under s3://bucket/run_prefix/, then switch the run's manifest to it, then latest.json.
    `planned` ({shard index: (first grid, grids)} of the run's plan): what is published must be
    exactly that plan's shards and reports (check_against_plan), nothing an earlier plan left."""
    check_bucket(bucket)
    check_key(run_prefix)
    _call(s3.check_bucket, client, bucket)
    keys = [k for section in SECTIONS for k in workspace.list(section)]
    shards = _staged_shards(workspace, bucket, run_prefix)
    if not shards or QUALITY_KEY not in keys:
        raise PublishError("the workspace has no packs or no quality report: postprocess did not finish")
    if planned is not None:
        check_against_plan(planned, shards, keys)
    staged = verify_staged(client, bucket, [s for s in shards if s.get("bucket")])  # before anything is written
    if staged:
        log(f"{len(staged)} pack(s) staged by the inference tasks are in the bucket with their sizes; the "
            "manifest names them where they lie")
    caps = _call(s3.probe, client, bucket)
    log(f"object store {s3.endpoint(client)}: {caps.describe()}")
    manifest_key = manifest_key_of(run_prefix)
    previous_etag, previous_keys = _current_manifest(client, bucket, run_prefix, log, run_id=metadata.get("run_id"))
    attempt = new_attempt_id()
    root = attempt_root(run_prefix, attempt)

    def upload(key: str) -> dict:
        local = workspace.get_file(key, Path(tmp_dir) / "publish" / attempt / key)
        target = join(root, key)
        try:
            size = local.stat().st_size
            if size < MULTIPART_THRESHOLD:  # one PUT, verified by the server (Content-MD5, SHA-256)
                data = local.read_bytes()
                _call(s3.put_bytes, client, bucket, target, data, content_type=_content_type(key))
                return {"key": target, "size": size, "sha256": hashlib.sha256(data).hexdigest()}
            data_sha = _sha256_file(local)
            _call(s3.upload_file, client, bucket, target, local, content_type=_content_type(key),
                  multipart_threshold=MULTIPART_THRESHOLD)
            stored = _call(s3.head, client, bucket, target) or {}
        finally:
            local.unlink(missing_ok=True)
        if stored.get("ContentLength") != size:
            raise PublishError(f"s3://{bucket}/{target} has {stored.get('ContentLength')} bytes, expected {size}")
        return {"key": target, "size": size, "sha256": data_sha}

    local_packs = [p for s in shards if not s.get("bucket") for p in s["packs"]]
    pack_keys = [k for p in local_packs for k in (p["key"], p["index"]["key"])]
    objects, total_bytes, copied = [], 0, {}
    # Uploads are I/O bound: a few in flight at once; results come back in key order.
    with ThreadPoolExecutor(max_workers=PUBLISH_THREADS, thread_name_prefix="publish") as pool:
        for n, obj in enumerate(pool.map(upload, keys + pack_keys), 1):
            if obj["key"].startswith(f"{root}/{PACKS_DIR}/"):
                copied[obj["key"][len(root) + 1:]] = obj
            else:
                objects.append(obj)
            total_bytes += obj["size"]
            if is_tenth(n, len(keys) + len(pack_keys)):
                log(f"uploaded {n}/{len(keys) + len(pack_keys)} object(s) of the workspace")
    packs = sorted(staged + [_copied_pack(p, copied, root) for p in local_packs], key=lambda p: p["first"])
    _check_cover(packs)
    total_bytes += sum(p["size"] + p["index"]["size"] for p in staged)
    status = gate_status(metadata)
    manifest = dict(metadata, version=MANIFEST_VERSION, status=status, root=root, attempt=attempt,
                    grids=sum(p["count"] for p in packs), objects=objects, packs=packs, published_at=_now())
    body = json.dumps(manifest, indent=2).encode()
    if caps.conditional_writes:
        try:
            s3.put_bytes(client, bucket, manifest_key, body, content_type="application/json",
                         if_match=previous_etag, if_none_match=previous_etag is None)
        except s3.S3PreconditionFailed as exc:
            if not _is_ours(client, bucket, manifest_key, body):
                raise PublishError(f"s3://{bucket}/{manifest_key} changed while this publish ran (another publish "
                                   f"of the same run?); the published run is the other one, untouched. A retry "
                                   f"publishes this one ({exc})") from exc
            log(f"s3://{bucket}/{manifest_key}: the write was refused as a repeat, and the manifest there is this "
                "publish's own (the answer to the first write was lost and the client sent it again): published")
        except s3.S3Error as exc:
            raise _error(exc) from exc
    else:
        _call(s3.put_bytes, client, bucket, manifest_key, body, content_type="application/json")
    if previous_keys is not None:
        log(f"re-published s3://{bucket}/{run_prefix}/: its manifest now names attempt {attempt}; the run "
            "stayed readable throughout")
    _remove_older_attempts(client, bucket, run_prefix, attempt, manifest_keys(manifest, run_prefix)
                           | (previous_keys or set()) | {manifest_key}, log)
    if status == "rejected":
        log(f"latest.json kept: the run failed the quality gate; it is published for inspection only, its "
            f"manifest says status rejected ({'; '.join(metadata['summary'].get('gate_failures') or [])})")
    else:
        _update_latest(client, bucket, manifest_key, metadata.get("logical_date"), caps.conditional_writes, log)
    return Published(bucket, run_prefix, manifest_key, len(objects) + 2 * len(packs), total_bytes, root,
                     caps.conditional_writes, status, len(packs))


SHARD_FILE_RE = re.compile(r"perf/shard_(\d{4,})\.[A-Za-z0-9._=@-]+")  # cgan.layout.workspace.published_shard_file_key
REPORT_KEYS = frozenset({PERF_KEY, LATENCY_PLOT_KEY, QUALITY_KEY})


def check_against_plan(planned: dict[int, tuple[int, int]], shards: list[dict], keys: list[str]) -> None:
    """The shards postprocess staged and the report keys of the workspace are exactly the plan's:
    each planned shard once, its packs holding its grids (first..first+count-1) and nothing else,
    the run's reports and each planned shard's perf files; StagedGridsError (no retry) naming the
    first difference otherwise."""
    fix = "nothing was published. Clear postprocess (and publish) so it runs again on this run's plan"
    got = {s.get("shard"): s for s in shards}
    if len(got) != len(shards) or set(got) != set(planned):
        extra, missing = sorted(map(str, set(got) - set(planned))), sorted(set(planned) - set(got))
        raise StagedGridsError(f"the staged shards are not the plan's ({len(planned)} shard(s); extra "
                               f"[{', '.join(extra)}], missing {missing}): {fix}")
    for index, (first, count) in planned.items():
        packs = got[index]["packs"]
        span = (packs[0]["first"], sum(p["count"] for p in packs)) if packs else (None, 0)
        if span != (first, count):
            raise StagedGridsError(f"shard {index}'s packs hold {span[1]} grid(s) from {span[0]}, the plan gives it "
                                   f"{count} from {first}: {fix}")
    extra_keys = [k for k in keys if k not in REPORT_KEYS
             and not ((m := SHARD_FILE_RE.fullmatch(k)) and int(m.group(1)) in planned)]
    missing_keys = sorted(REPORT_KEYS - set(keys)) + [
        f"perf/shard_{i:04d}.*" for i in sorted(planned)
        if not any((m := SHARD_FILE_RE.fullmatch(k)) and int(m.group(1)) == i for k in keys)]
    if extra_keys or missing_keys:
        raise StagedGridsError(f"the workspace's reports are not this plan's (extra: {extra_keys[:3]}, missing: "
                               f"{missing_keys[:3]}): {fix}")


def _staged_shards(workspace, bucket: str, run_prefix: str) -> list[dict]:
    """Every shard's packs as postprocess accepted them (cgan.layout.workspace STAGED_KEY); those
    staged in a bucket each checked to lie in this bucket under this run."""
    from cgan.layout.workspace import STAGED_KEY, STAGED_VERSION

    if not workspace.exists(STAGED_KEY):
        return []
    try:
        doc = json.loads(workspace.get_bytes(STAGED_KEY))
        shards = doc["shards"]
        if doc.get("version") != STAGED_VERSION or not all(isinstance(s.get("packs"), list) for s in shards):
            raise ValueError(f"version {doc.get('version')!r}, expected {STAGED_VERSION}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PublishError(f"{STAGED_KEY} in the workspace is unreadable ({exc}): re-run postprocess") from exc
    for shard in shards:
        if shard.get("bucket") is None:
            continue
        if shard.get("bucket") != bucket or not str(shard.get("root", "")).startswith(f"{run_prefix}/attempts/"):
            raise StagedGridsError(
                f"shard {shard.get('shard')} staged its packs in s3://{shard.get('bucket')}/{shard.get('root')}/, "
                f"not under s3://{bucket}/{run_prefix}/attempts/: nothing was published. Clear the shard's "
                "inference task and everything after it, so it stages its packs where this run publishes")
    return shards


def verify_staged(client, bucket: str, shards: list[dict]) -> list[dict]:
    """The manifest entries of the shards' staged packs, each pack and index checked present with
    its size by listing its attempt's packs/ (StagedGridsError naming the shard otherwise)."""
    packs = []
    for shard in shards:
        root = shard["root"]
        listed = {o["Key"]: o.get("Size") for o in _call(s3.list_objects, client, bucket, f"{root}/{PACKS_DIR}/")}
        for pack in shard["packs"]:
            for key, size in ((pack["key"], pack["size"]), (pack["index"]["key"], pack["index"]["size"])):
                if listed.get(key) != size:
                    found = "missing" if key not in listed else f"{listed[key]} bytes, its render.json says {size}"
                    raise StagedGridsError(
                        f"shard {shard['shard']}: the staged s3://{bucket}/{key} is {found}; nothing was "
                        f"published. Clear the shard's inference task (map index {shard['shard']}) and everything "
                        "after it, so it stages its packs again")
            packs.append(pack)
    return packs


def _copied_pack(pack: dict, copied: dict[str, dict], root: str) -> dict:
    """A workspace pack's manifest entry once copied under the publish attempt `root`."""
    tar, index = copied[pack["key"]], copied[pack["index"]["key"]]
    if tar["sha256"] != pack["sha256"] or index["sha256"] != pack["index"]["sha256"]:
        raise StagedGridsError(f"{pack['key']} in the workspace does not match the sha256 its shard recorded: "
                               f"nothing was published. Clear the inference task of the shard holding grid "
                               f"{pack['first']} and everything after it, so it makes its packs again")
    return {**pack, "key": tar["key"], "index": {**pack["index"], "key": index["key"]}}


def _check_cover(packs: list[dict]) -> None:
    """The packs hold grids 0..N-1, each once, in order (the readers' arithmetic relies on it)."""
    expect = 0
    for pack in packs:
        if pack["first"] != expect:
            raise PublishError(f"the run's packs do not hold grid {expect} (next pack starts at {pack['first']}): "
                               "re-run postprocess")
        expect += pack["count"]


def gate_status(metadata: dict) -> str:
    """accepted or rejected: the quality gate's verdict in the run's summary (a summary made
    before the gate existed counts as accepted)."""
    status = (metadata.get("summary") or {}).get("gate") or "accepted"
    if status not in ("accepted", "rejected"):
        raise PublishError(f"the run's summary has gate status {status!r}, expected accepted or rejected")
    return status


def _current_manifest(client, bucket: str, run_prefix: str, log: Log,
                      run_id: str | None = None) -> tuple[str | None, set[str] | None]:
    """(ETag, object keys) of the run's manifest as it is now; (None, None) when there is none.
    An unreadable manifest names no objects (no reader can use it either). A manifest of another
    run id than `run_id` is refused (PublishConfigError): a re-publish never replaces another run."""
    key = manifest_key_of(run_prefix)
    try:
        data, etag = s3.get_bytes(client, bucket, key, MAX_MANIFEST_BYTES)
    except s3.S3Missing:
        return None, None
    except s3.S3Error as exc:
        raise _error(exc) from exc
    try:
        manifest = json.loads(data)
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        log(f"s3://{bucket}/{key} is not a manifest ({exc}): it is replaced")
        return etag, set()
    if run_id is not None and manifest.get("run_id") not in (None, run_id):
        raise PublishConfigError(
            f"s3://{bucket}/{key} is the manifest of run {manifest.get('run_id')!r}, not of this run {run_id!r}: "
            "nothing was written and that run is untouched. Two run ids share one key only when one was "
            "published before run keys became injective; give this run another run id")
    return etag, manifest_keys(manifest, run_prefix)


def _is_ours(client, bucket: str, key: str, body: bytes) -> bool:
    """Whether the object at key is exactly `body`: a conditional write refused (412) after its
    first send was applied and only the answer lost, botocore having sent it again."""
    try:
        data, _ = s3.get_bytes(client, bucket, key, MAX_MANIFEST_BYTES)
    except s3.S3Error:
        return False
    return data == body


def _remove_older_attempts(client, bucket: str, run_prefix: str, attempt: str, keep: set[str], log: Log) -> None:
    """Delete what the new and the replaced manifest do not name: attempts older than this one
    (a newer one may be another publish still uploading) and objects outside any attempt."""
    stale = []
    for key in _call(s3.list_keys, client, bucket, f"{run_prefix}/"):
        other = attempt_of(run_prefix, key)
        if key not in keep and (other is None or other < attempt):
            stale.append(key)
    if stale:
        _call(s3.delete_keys, client, bucket, stale)
        log(f"removed {len(stale)} object(s) under s3://{bucket}/{run_prefix}/ that no manifest names "
            f"(first: {stale[0]})")


MIN_RETENTION_DAYS = 1.0  # a shorter one could sweep what a run still in progress staged


def check_retention(days: float, what: str) -> float:
    """A retention in days of at least MIN_RETENTION_DAYS; PublishConfigError naming `what` otherwise."""
    if isinstance(days, bool) or not isinstance(days, int | float) or not days >= MIN_RETENTION_DAYS:
        raise PublishConfigError(f"{what}={days!r}: a retention must be at least {MIN_RETENTION_DAYS:g} day (a "
                                 "shorter one could remove what a run still in progress staged); nothing was removed")
    return float(days)


def _sweepable(client, bucket: str, prefix: str, log: Log) -> tuple[list[dict], list[str]] | None:
    """The objects cgan wrote under an unpublished run prefix (by pattern) and the other keys
    found there; None when the run turns out to be published. Its manifest must be missing twice,
    to a HEAD and in the prefix's listing: one spurious 404 is not an absent manifest."""
    key = manifest_key_of(prefix)
    if _call(s3.head, client, bucket, key) is not None:
        return None
    found = _call(s3.list_objects, client, bucket, f"{prefix}/")
    if any(o["Key"] == key for o in found):
        log(f"s3://{bucket}/{key} answered 404 but is listed: the run is published, kept")
        return None
    own = [o for o in found if is_own_key(prefix, o["Key"])]
    return own, [o["Key"] for o in found if not is_own_key(prefix, o["Key"])]


def _delete_run_objects(client, bucket: str, prefix: str, objects: list[dict]) -> None:
    """Delete a run's own objects so that a sweep cut off at any point leaves a prefix the next
    sweep removes the same way: packs, then their indexes and the reports, in batches; the
    manifest is looked for again before each batch (a publish that began meanwhile stops it)."""
    order = sorted(objects, key=lambda o: (not o["Key"].endswith(".tar"), o["Key"]))
    for i in range(0, len(order), 1000):
        if i and _call(s3.head, client, bucket, manifest_key_of(prefix)) is not None:
            raise PublishError(f"s3://{bucket}/{prefix}/ was published while it was being swept: the sweep stopped")
        _call(s3.delete_keys, client, bucket, [o["Key"] for o in order[i:i + 1000]])


def remove_unpublished_runs(client, bucket: str, *, now: float, retention_days: float, keep: str = "",
                            log: Log = print) -> dict[str, float]:
    """Delete what cgan staged under the run prefixes of the publish bucket that have no manifest
    (runs that failed after their inference tasks staged packs) and whose newest object is older
    than retention_days (>= MIN_RETENTION_DAYS, by the store's clock: give `now` from
    s3.server_time); {run prefix: age in days} of those removed. Only keys cgan writes
    (cgan.layout.published.is_own_key) are deleted: anything else under a prefix is left and
    named. `keep` (the current run's prefix) is never touched."""
    check_retention(retention_days, "the workspace retention (CGAN_WORKSPACE_RETENTION_DAYS)")
    removed: dict[str, float] = {}
    for name in _call(lambda: list(s3.list_folders(client, bucket, RUNS_PREFIX))):
        prefix = f"{RUNS_PREFIX}{name}"
        if prefix == keep.rstrip("/"):
            continue
        sweep = _sweepable(client, bucket, prefix, log)
        if sweep is None:
            continue
        own, foreign = sweep
        if foreign:
            log(f"s3://{bucket}/{prefix}/ holds {len(foreign)} key(s) cgan did not write (first: {foreign[0]}): "
                "they are left as they are")
        if not own:
            continue
        age = (now - max(o["LastModified"].timestamp() for o in own)) / 86400
        if age > retention_days:
            _delete_run_objects(client, bucket, prefix, own)
            removed[prefix] = age
            log(f"removed s3://{bucket}/{prefix}/: no manifest (the run never published), newest object "
                f"{age:.1f} days old (> {retention_days:g}): {len(own)} object(s), "
                f"{sum(o.get('Size', 0) for o in own)} bytes")
    return removed


def remove_expired_runs(client, bucket: str, *, now: float, retention_days: float, keep: str = "",
                        log: Log = print) -> dict[str, float]:
    """Delete the published runs whose manifest was written more than retention_days ago (by the
    store's clock), except the run latest.json names and `keep` (the current run's prefix);
    {run prefix: age in days} of those removed. Each run's manifest goes first (readers stop
    following it at once), then the objects cgan wrote under it (is_own_key; anything else is
    left). Nothing is removed when latest.json cannot be read for another reason than its
    absence: the run it names must never be removed."""
    check_retention(retention_days, "the published retention (CGAN_PUBLISHED_RETENTION_DAYS)")
    try:
        data, _ = s3.get_bytes(client, bucket, LATEST_KEY, MAX_MANIFEST_BYTES)
        pinned = json.loads(data).get("manifest")
    except s3.S3Missing:
        pinned = None
    except (s3.S3Error, ValueError, AttributeError) as exc:
        raise PublishError(f"s3://{bucket}/{LATEST_KEY} cannot be read ({exc}): no published run was removed, "
                           "the one it names must be kept") from exc
    removed: dict[str, float] = {}
    for name in _call(lambda: list(s3.list_folders(client, bucket, RUNS_PREFIX))):
        prefix = f"{RUNS_PREFIX}{name}"
        key = manifest_key_of(prefix)
        if prefix == keep.rstrip("/") or key == pinned:
            continue
        found = _call(s3.head, client, bucket, key)
        if found is None:  # not published: remove_unpublished_runs's
            continue
        age = (now - found["LastModified"].timestamp()) / 86400
        if age <= retention_days:
            continue
        _call(s3.delete_keys, client, bucket, [key])
        objects = [o for o in _call(s3.list_objects, client, bucket, f"{prefix}/") if is_own_key(prefix, o["Key"])]
        _delete_run_objects(client, bucket, prefix, objects)
        removed[prefix] = age
        log(f"removed the published run s3://{bucket}/{prefix}/: its manifest is {age:.1f} days old "
            f"(> CGAN_PUBLISHED_RETENTION_DAYS={retention_days:g}); {len(objects) + 1} object(s)")
    return removed


def _error(exc: s3.S3Error) -> PublishError:
    return (PublishConfigError if isinstance(exc, s3.S3ConfigError) else PublishError)(str(exc))


def _call(fn, *args, **kwargs):
    """fn through the adapter, its S3Error as PublishError / PublishConfigError."""
    try:
        return fn(*args, **kwargs)
    except s3.S3Error as exc:
        raise _error(exc) from exc


def _update_latest(client, bucket: str, manifest_key: str, logical_date: str | None, conditional: bool,
                   log: Log) -> None:
    """Point latest.json at this manifest unless it already names a newer run; with conditional
    writes, only over the exact latest.json that was read (re-read and decided again otherwise)."""
    for _ in range(LATEST_TRIES):
        try:
            data, etag = s3.get_bytes(client, bucket, LATEST_KEY, MAX_MANIFEST_BYTES)
        except s3.S3Missing:
            data, etag = None, None
        except s3.S3Error as exc:
            raise _error(exc) from exc
        current = None
        if data is not None:
            try:
                current = json.loads(data)
            except ValueError as exc:
                log(f"latest.json is replaced: s3://{bucket}/{LATEST_KEY} is not JSON ({exc})")
        newest = (current.get("logical_date") or "") if isinstance(current, dict) else ""
        if logical_date and newest > logical_date and isinstance(current, dict):
            log(f"latest.json kept: it names a newer run ({current.get('manifest')})")
            return
        body = json.dumps({"manifest": manifest_key, "logical_date": logical_date, "updated_at": _now()},
                          indent=2).encode()
        try:
            if conditional:
                s3.put_bytes(client, bucket, LATEST_KEY, body, content_type="application/json",
                             if_match=etag, if_none_match=etag is None)
            else:
                s3.put_bytes(client, bucket, LATEST_KEY, body, content_type="application/json")
            return
        except s3.S3PreconditionFailed:
            if _is_ours(client, bucket, LATEST_KEY, body):  # applied, its answer lost, refused when sent again
                return
            log("latest.json changed while it was being updated: read again")
        except s3.S3Error as exc:
            cause = exc.__cause__
            if cause is None or s3.error_code(cause) != "ConditionalRequestConflict":  # 409: retry at once
                raise _error(exc) from exc
    raise PublishError(f"latest.json kept changing under {LATEST_TRIES} tries to move it to {manifest_key}; the run "
                       "itself is published, a retry of the task moves the pointer")


def point_latest(client, bucket: str, run_name: str, *, log: Log = print) -> dict:
    """Point latest.json at the published run `run_name`, whatever it named before (e.g. away from
    a run that was given a wrong logical date); the new pointer carries that run's logical date,
    so later runs move it on as usual. The run must be published and not rejected by the gate.
    Written over the exact latest.json read (If-Match) where the store honours it."""
    from cgan.layout.published import manifest_key

    key = manifest_key(run_name)
    try:
        data, _ = s3.get_bytes(client, bucket, key, MAX_MANIFEST_BYTES)
    except s3.S3Missing:
        raise PublishConfigError(f"s3://{bucket}/{key} does not exist: {run_name!r} is not a published run "
                                 "(pick one from the gallery's list of runs)") from None
    except s3.S3Error as exc:
        raise _error(exc) from exc
    try:
        manifest = json.loads(data)
        status, logical_date = manifest.get("status"), manifest.get("logical_date")
    except (ValueError, AttributeError) as exc:
        raise PublishConfigError(f"s3://{bucket}/{key} is not a manifest ({exc}): latest.json not moved") from exc
    if status == "rejected":
        raise PublishConfigError(f"run {run_name!r} failed the quality gate (status rejected): latest.json names "
                                 "accepted runs only, it was not moved")
    caps = _call(s3.probe, client, bucket)
    try:
        _, etag = s3.get_bytes(client, bucket, LATEST_KEY, MAX_MANIFEST_BYTES)
    except s3.S3Missing:
        etag = None
    except s3.S3Error as exc:
        raise _error(exc) from exc
    pointer = {"manifest": key, "logical_date": logical_date, "updated_at": _now(), "set_by": "cgan set-latest"}
    body = json.dumps(pointer, indent=2).encode()
    try:
        if caps.conditional_writes:
            s3.put_bytes(client, bucket, LATEST_KEY, body, content_type="application/json",
                         if_match=etag, if_none_match=etag is None)
        else:
            s3.put_bytes(client, bucket, LATEST_KEY, body, content_type="application/json")
    except s3.S3PreconditionFailed as exc:
        if not _is_ours(client, bucket, LATEST_KEY, body):
            raise PublishError(f"s3://{bucket}/{LATEST_KEY} changed while it was being moved (a publish finished "
                               "meanwhile?): run the command again") from exc
    except s3.S3Error as exc:
        raise _error(exc) from exc
    log(f"s3://{bucket}/{LATEST_KEY} now names {key} (logical date {logical_date})")
    return pointer


def _sha256_file(path: Path) -> str:
    from cgan.storage.files import sha256_file

    return sha256_file(path)


def _content_type(key: str) -> str:
    return {"png": "image/png", "json": "application/json", "log": "text/plain", "txt": "text/plain"}.get(
        key.rsplit(".", 1)[-1], "application/octet-stream")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


TOOL_PACKAGES = ("cgan-airflow", "torch", "onnx", "onnxsim", "onnxruntime", "numpy", "pillow",
                 "apache-airflow", "boto3")


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in TOOL_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def build_metadata(*, run_id: str, logical_date: str | None, params: dict, export: dict | None,
                   convert: dict | None, postprocess: dict | None) -> dict:
    """The manifest's description of a run: what was asked, with which model and tools."""
    model = {}
    if export:
        model.update({k: export.get(k) for k in ("checkpoint_sha256", "onnx_sha256", "channels", "batch", "opset",
                                                 "export_max_abs_err")})
    if convert:
        model.update({k: v for k, v in convert.items() if k in ("om_sha256", "cache_key", "cache_hit",
                                                              "toolkit_version")})
    tools = tool_versions()
    if convert and convert.get("toolkit_version"):
        tools["cann_toolkit"] = convert["toolkit_version"]
    return {"run_id": run_id, "logical_date": logical_date, "params": params, "model": model,
            "tools": tools, "summary": postprocess or {}}
