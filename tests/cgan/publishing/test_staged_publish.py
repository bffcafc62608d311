"""Grid packs staged in the publish bucket by the inference tasks (cgan.run.inference.run_shard with
a cgan.run.staging.BucketPacks), then named by the manifest at publish; on a real S3-compatible
server (SeaweedFS)."""

import hashlib
import json
import secrets
import time

import pytest

from cgan.layout.packs import PackIndex, read_members
from cgan.layout.published import manifest_keys, manifest_packs, relative_objects
from cgan.publishing import gallery
from cgan.publishing.publish import LATEST_NAME, StagedGridsError, build_metadata, publish_run, remove_unpublished_runs
from cgan.recipe.bins import write_bins
from cgan.run.inference import run_shard
from cgan.run.plan import plan_shards
from cgan.run.postprocess import postprocess_run
from cgan.run.staging import BucketPacks
from cgan.runtimes.onnxruntime_runner import run_onnxruntime
from cgan.storage.keys import StoreError
from cgan.storage.store import open_store
from tests.workspaces import upload_pack

PREFIX = "runs/r1"
PACK_NAMES = ["pack_00000000.json", "pack_00000000.tar", "pack_00000003.json", "pack_00000003.tar"]


def _keys(client, bucket, prefix=""):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def _body(client, bucket, key) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def stage_shard(tmp_path, onnx, store, shard, client, bucket, prefix=PREFIX) -> BucketPacks:
    """One inference task try as the cpu operator makes it: run_shard with the run's stager, so
    the shard's packs are staged in the publish bucket as they fill, then the hand-over."""
    local = tmp_path / f"try-{time.monotonic_ns()}"
    if not store.list(shard.bins_prefix):
        write_bins(local / "inputs", shard.count, 9, start=shard.start)
        upload_pack(store, shard, local / "inputs")

    def onnxruntime(bins, out, on_output):
        return run_onnxruntime(onnx, bins, out, on_output=on_output, write_stems=shard.handed_stems), []

    stager = BucketPacks(client, bucket, prefix)
    result = run_shard(store, shard, local, onnxruntime, stager=stager, log=lambda m: None)
    assert result.staged_root == stager.root == result.as_xcom()["staged_root"]
    assert result.tally["packs"]["root"] == stager.root and result.tally["packs"]["bucket"] == bucket
    return stager


@pytest.fixture
def staged(tmp_path, upstream_onnx, local_s3):
    """5 grids in 2 shards (packs 0..2 and 3..4), staged in a fresh bucket under runs/r1; the
    workspace without packs."""
    client = local_s3["client"]
    bucket = f"stage-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    store = open_store((tmp_path / "ws").as_uri())
    shards = plan_shards(5, "cpu", [0], 3, parity_grids=2)
    stagers = [stage_shard(tmp_path, upstream_onnx, store, s, client, bucket) for s in shards]
    return store, shards, client, bucket, stagers


def _meta():
    return build_metadata(run_id="r1", logical_date="2026-11-26T02:00:00", params={"num_grids": 5},
                          export=None, convert=None, postprocess={"grids": 5, "gate": "accepted"})


def _publish(store, client, bucket, tmp_path, lines=None):
    return publish_run(store, client, bucket, PREFIX, metadata=_meta(), tmp_dir=tmp_path / f"p{time.monotonic_ns()}",
                       log=(lines.append if lines is not None else lambda m: None))


def _manifest(client, bucket):
    return json.loads(client.get_object(Bucket=bucket, Key=f"{PREFIX}/manifest.json")["Body"].read())


def _pack_keys(manifest) -> set[str]:
    return {k for p in manifest["packs"] for k in (p["key"], p["index"]["key"])}


def _grid(client, bucket, manifest, grid: int) -> bytes:
    """Grid `grid` read the way a consumer without the gallery would: its pack's index, then
    one ranged GET."""
    (pack,) = [p for p in manifest["packs"] if p["first"] <= grid < p["first"] + p["count"]]
    member = PackIndex.from_json(_body(client, bucket, pack["index"]["key"])).member(grid)
    rng = f"bytes={member.offset}-{member.offset + member.size - 1}"
    data = client.get_object(Bucket=bucket, Key=pack["key"], Range=rng)["Body"].read()
    assert hashlib.sha256(data).hexdigest() == member.sha256
    return data


def test_staged_packs_are_in_the_bucket_before_publish_and_the_manifest_names_them(
        staged, upstream_checkpoint, tmp_path):
    store, shards, client, bucket, stagers = staged
    # before publish: every pack is in the bucket under its shard's own attempt; no manifest, no latest
    before = _keys(client, bucket)
    assert [k.rsplit("/", 1)[1] for k in before] == PACK_NAMES
    assert {k.rsplit("/packs/", 1)[0] for k in before} == {s.root for s in stagers}
    assert store.list("packs") == [] and store.list("grids") == []  # nothing written to the workspace
    lines: list[str] = []
    summary = postprocess_run(store, shards, upstream_checkpoint, log=lines.append)
    assert summary["grids"] == 5 and lines[-1] == "grids 5/5 (shard 1: 1 pack(s) staged in the publish bucket)"
    assert store.list("packs") == []  # postprocess neither read nor copied them
    published = _publish(store, client, bucket, tmp_path)
    manifest = _manifest(client, bucket)
    assert manifest["version"] == 2 and manifest["grids"] == 5 and published.packs == 2
    # named where they were staged, in grid order, covering grids 0..4
    assert sorted(_pack_keys(manifest)) == before
    assert [(p["key"].rsplit("/packs/", 1)[0], p["first"], p["count"]) for p in manifest["packs"]] == [
        (stagers[0].root, 0, 3), (stagers[1].root, 3, 2)]
    assert manifest_packs(manifest, PREFIX) == manifest["packs"]
    for entry in manifest["objects"] + manifest["packs"] + [p["index"] for p in manifest["packs"]]:
        body = _body(client, bucket, entry["key"])
        assert len(body) == entry["size"] and hashlib.sha256(body).hexdigest() == entry["sha256"]
    names = []
    for pack in manifest["packs"]:  # each pack a tar of its grids' PNGs, in order
        (tmp_path / "p.tar").write_bytes(_body(client, bucket, pack["key"]))
        names += [name for name, data in read_members(tmp_path / "p.tar") if data[:4] == b"\x89PNG"]
    assert names == [f"grid_0000000{i}.png" for i in range(5)]
    assert published.objects == len(manifest["objects"]) + 4 and f"{published.root}/quality/quality.json" in {
        o["key"] for o in manifest["objects"]}
    assert manifest_keys(manifest, PREFIX) == {o["key"] for o in manifest["objects"]} | set(before)
    assert json.loads(client.get_object(Bucket=bucket, Key=LATEST_NAME)["Body"].read())["manifest"] == \
        f"{PREFIX}/manifest.json"
    rel = relative_objects(manifest, PREFIX)
    assert {"quality/quality.json", "perf/perf.json", "perf/latency.png"} <= set(rel)
    # the gallery reads the run: its grids (from the shard attempts), perf and quality (the publish attempt)
    cache = gallery.ManifestCache()
    detail = gallery.load_run(client, bucket, "r1", cache=cache)
    assert detail.grids == 5 and detail.packs == 2 and not detail.problems
    assert detail.quality["grids"] == 5 and "_object_keys" not in detail.manifest
    image = gallery.open_grid(client, bucket, "r1", 4, cache=cache)
    assert image.data[:4] == b"\x89PNG" and image.data == _grid(client, bucket, manifest, 4)
    png = gallery.open_png(client, bucket, "r1", "perf/latency.png", cache=cache)
    assert png.key == rel["perf/latency.png"][0] and png.read()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["pack_00000003.tar", "pack_00000003.json"], ids=["tar", "index"])
@pytest.mark.parametrize("damage", ["missing", "short"])
def test_a_missing_or_short_staged_pack_fails_publish_and_nothing_is_published(
        staged, upstream_checkpoint, tmp_path, damage, name):
    store, shards, client, bucket, stagers = staged
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    key = f"{stagers[1].root}/packs/{name}"
    size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    if damage == "missing":
        client.delete_object(Bucket=bucket, Key=key)
    else:
        client.put_object(Bucket=bucket, Key=key, Body=b"\x89PNG short")
    before = _keys(client, bucket)
    found = "missing" if damage == "missing" else f"10 bytes, its render.json says {size}"
    with pytest.raises(StagedGridsError, match=rf"shard 1: the staged s3://{bucket}/{key} is {found}; nothing was "
                                               r"published. Clear the shard's inference task \(map index 1\)"):
        _publish(store, client, bucket, tmp_path)
    assert _keys(client, bucket) == before  # no manifest, no latest.json, no publish attempt


def test_packs_staged_for_another_run_are_refused_and_nothing_is_published(staged, upstream_checkpoint,
                                                                          upstream_onnx, tmp_path):
    store, shards, client, bucket, _ = staged
    stage_shard(tmp_path, upstream_onnx, store, shards[1], client, bucket, prefix="runs/other")
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)  # accepted: publish checks where
    before = _keys(client, bucket)
    with pytest.raises(StagedGridsError, match=rf"shard 1 staged its packs in s3://{bucket}/runs/other/attempts/"
                                               rf".*not under s3://{bucket}/{PREFIX}/attempts/: nothing was "
                                               "published"):
        _publish(store, client, bucket, tmp_path)
    assert _keys(client, bucket) == before


def test_a_retried_shards_stale_attempt_is_removed_at_publish_and_a_rerun_never_touches_the_published_run(
        staged, upstream_checkpoint, upstream_onnx, tmp_path):
    store, shards, client, bucket, stagers = staged
    stale = stagers[0]
    retry = stage_shard(tmp_path, upstream_onnx, store, shards[0], client, bucket)  # a second try of shard 0
    assert stale.root != retry.root and len(_keys(client, bucket, stale.root + "/")) == 2
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    lines: list[str] = []
    _publish(store, client, bucket, tmp_path, lines)
    first = _manifest(client, bucket)
    named = {o["key"] for o in first["objects"]} | _pack_keys(first)
    assert not _keys(client, bucket, stale.root + "/")  # the failed try's packs, removed after the switch
    assert any(f"removed 2 object(s) under s3://{bucket}/{PREFIX}/" in line for line in lines), lines
    # the two tries never mix: the manifest names the retry's pack of shard 0, not the stale one
    assert _pack_keys(first) == set(_keys(client, bucket, retry.root + "/")) | set(
        _keys(client, bucket, stagers[1].root + "/"))
    bodies = {k: _body(client, bucket, k) for k in named}
    grids = [_grid(client, bucket, first, g) for g in range(5)]
    # shard 0 runs again after the run was published: a new attempt, the published objects untouched
    rerun = stage_shard(tmp_path, upstream_onnx, store, shards[0], client, bucket)
    assert {k: _body(client, bucket, k) for k in named} == bodies
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    _publish(store, client, bucket, tmp_path)
    second = _manifest(client, bucket)
    assert [p["key"].rsplit("/packs/", 1)[0] for p in second["packs"]] == [rerun.root, stagers[1].root]
    # the replaced manifest's objects stay for readers of it until the next publish
    assert all(client.head_object(Bucket=bucket, Key=k) for k in named)
    assert [_grid(client, bucket, first, g) for g in range(5)] == grids
    assert [_grid(client, bucket, second, g) for g in range(5)] == grids  # the same grids, made again
    _publish(store, client, bucket, tmp_path)
    assert not _keys(client, bucket, retry.root + "/") and _keys(client, bucket, rerun.root + "/")
    third = _manifest(client, bucket)
    assert all(client.head_object(Bucket=bucket, Key=o["key"])["ContentLength"] == o["size"]
               for o in third["objects"] + third["packs"] + [p["index"] for p in third["packs"]])


def test_a_republished_run_stays_readable_through_the_gallery(staged, upstream_checkpoint, upstream_onnx,
                                                              tmp_path):
    store, shards, client, bucket, _ = staged
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    _publish(store, client, bucket, tmp_path)
    first = _manifest(client, bucket)
    reader = gallery.ManifestCache()  # a gallery that read the run before it was re-published
    grid = gallery.open_grid(client, bucket, "r1", 1, cache=reader).data
    stage_shard(tmp_path, upstream_onnx, store, shards[0], client, bucket)  # shard 0 made again
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    lines: list[str] = []
    _publish(store, client, bucket, tmp_path, lines)
    assert any("re-published" in line and "stayed readable throughout" in line for line in lines), lines
    # the cached (replaced) manifest still reads: its packs are kept until the next publish
    assert gallery.open_grid(client, bucket, "r1", 1, cache=reader).data == grid
    assert gallery.open_grid(client, bucket, "r1", 1, cache=gallery.ManifestCache()).data == grid
    _publish(store, client, bucket, tmp_path)  # removes the first manifest's pack of shard 0
    assert not _keys(client, bucket, first["packs"][0]["key"])
    # a reader still holding the first manifest finds its pack gone and reads the manifest again
    assert gallery.open_grid(client, bucket, "r1", 1, cache=reader).data == grid
    assert gallery.load_run(client, bucket, "r1", cache=reader).grids == 5


def test_a_manifest_whose_packs_do_not_cover_the_run_is_refused_by_readers(staged, upstream_checkpoint, tmp_path):
    store, shards, client, bucket, _ = staged
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    _publish(store, client, bucket, tmp_path)
    manifest = _manifest(client, bucket)
    with pytest.raises(StoreError, match="is not the pack of grid 0"):
        manifest_packs(dict(manifest, packs=manifest["packs"][1:]), PREFIX)
    with pytest.raises(StoreError, match="is not the pack of grid 3"):
        manifest_packs(dict(manifest, packs=[manifest["packs"][0], dict(manifest["packs"][1], key="elsewhere")]),
                       PREFIX)
    with pytest.raises(StoreError, match="lists no packs"):
        manifest_packs({k: v for k, v in manifest.items() if k != "packs"}, PREFIX)


def test_a_failed_runs_staged_packs_are_removed_after_the_retention(staged, upstream_checkpoint, upstream_onnx,
                                                                    tmp_path):
    store, shards, client, bucket, _ = staged  # runs/r1: staged, never published (the run failed)
    young = open_store((tmp_path / "ws2").as_uri())
    stage_shard(tmp_path, upstream_onnx, young, shards[0], client, bucket, prefix="runs/r2")  # failed later
    published = open_store((tmp_path / "ws3").as_uri())
    for shard in shards:
        stage_shard(tmp_path, upstream_onnx, published, shard, client, bucket, prefix="runs/r3")
    postprocess_run(published, shards, upstream_checkpoint, log=lambda m: None)
    publish_run(published, client, bucket, "runs/r3", metadata=_meta(), tmp_dir=tmp_path / "p3", log=lambda m: None)
    r3 = _keys(client, bucket, "runs/r3/")
    assert len([k for k in r3 if k.endswith(".tar")]) == 2
    lines: list[str] = []
    now = time.time()
    # within the retention: nothing goes
    assert remove_unpublished_runs(client, bucket, now=now, retention_days=7, log=lines.append) == {}
    # 8 days later: the unpublished runs go (the current one, `keep`, stays); a published run never does
    later = now + 8 * 86400
    removed = remove_unpublished_runs(client, bucket, now=later, retention_days=7, keep="runs/r2",
                                      log=lines.append)
    assert list(removed) == ["runs/r1"] and removed["runs/r1"] > 7
    assert not _keys(client, bucket, "runs/r1/") and _keys(client, bucket, "runs/r2/")
    assert _keys(client, bucket, "runs/r3/") == r3
    assert "removed s3://" in lines[-1] and "no manifest (the run never published)" in lines[-1]
    assert list(remove_unpublished_runs(client, bucket, now=later, retention_days=7, log=lines.append)) == [
        "runs/r2"]
    assert _keys(client, bucket, "runs/r3/") == r3


def _planned(shards):
    return {s.index: (s.start, s.count) for s in shards}


def test_publish_refuses_what_the_plan_did_not_make(staged, upstream_checkpoint, tmp_path):
    """Publish derives what it expects from the plan (the shards and their reports) and refuses
    anything extra or missing. Before: it published every key under the workspace's perf/ and
    quality/, so an earlier plan of the same run (automatic sharding follows the cores of the
    worker that ran plan) left files in the published run."""
    from cgan.layout.workspace import published_shard_file_key
    from cgan.publishing.publish import StagedGridsError

    store, shards, client, bucket, _ = staged
    stale = published_shard_file_key(7, "perf.json")  # an earlier plan's shard 7
    store.put_bytes(b"{}", stale)
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    assert not store.exists(stale)  # postprocess makes perf/ from this plan alone
    store.put_bytes(b"{}", stale)  # ... and anything written there after it is refused by publish

    def publish(planned):
        return publish_run(store, client, bucket, PREFIX, metadata=_meta(), log=lambda m: None, planned=planned,
                           tmp_dir=tmp_path / f"p{time.monotonic_ns()}")

    with pytest.raises(StagedGridsError, match=r"reports are not this plan's \(extra: \['perf/shard_0007.perf.json'\]"):
        publish(_planned(shards))
    store.path(stale).unlink()
    bigger = {**_planned(shards), 2: (5, 1)}  # a plan with one more shard than was staged
    with pytest.raises(StagedGridsError, match=r"not the plan's \(3 shard\(s\); extra \[\], missing \[2\]\)"):
        publish(bigger)
    shifted = {0: (0, 2), 1: (2, 3)}  # the same shards, other grids
    with pytest.raises(StagedGridsError, match="shard 0's packs hold 3 grid"):
        publish(shifted)
    assert not _keys(client, bucket, f"{PREFIX}/manifest.json")  # nothing published by any of these
    assert publish(_planned(shards)).packs == 2
