"""Grids staged in the publish bucket by the inference tasks (cgan.run.staging), then named by the
manifest at publish; on a real S3-compatible server (SeaweedFS)."""

import hashlib
import json
import secrets
import time

import pytest

from cgan.layout.published import relative_objects
from cgan.publishing import gallery
from cgan.publishing.publish import LATEST_NAME, StagedGridsError, build_metadata, publish_run, remove_unpublished_runs
from cgan.recipe.bins import write_bins
from cgan.run.plan import plan_shards
from cgan.run.postprocess import postprocess_run
from cgan.run.shard_render import ShardRenderer, hand_over
from cgan.run.staging import GridStager
from cgan.runtimes.onnxruntime_runner import run_onnxruntime
from cgan.storage.store import open_store
from tests.workspaces import upload_pack

PREFIX = "runs/r1"


def _keys(client, bucket, prefix=""):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def run_shard(tmp_path, onnx, store, shard, client, bucket, prefix=PREFIX) -> GridStager:
    """One inference task try as the cpu operator makes it: PNGs staged as rendered, hand-over."""
    local = tmp_path / f"try-{time.monotonic_ns()}"
    write_bins(local / "bins", shard.count, 9, start=shard.start)
    if not store.list(shard.bins_prefix):
        upload_pack(store, shard, local / "bins")
    stager = GridStager(client, bucket, prefix)
    with ShardRenderer(store, stager=stager) as renderer:
        run = run_onnxruntime(onnx, local / "bins", local / "out", on_output=renderer.submit)
        tally = renderer.finish()
    hand_over(store, shard, run.output_dir, tally, [run.output_dir / "perf.json"])
    return stager


@pytest.fixture
def staged(tmp_path, upstream_onnx, local_s3):
    """5 grids in 2 shards, staged in a fresh bucket under runs/r1; the workspace without PNGs."""
    client = local_s3["client"]
    bucket = f"stage-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    store = open_store((tmp_path / "ws").as_uri())
    shards = plan_shards(5, "cpu", [0], 3, parity_grids=2)
    stagers = [run_shard(tmp_path, upstream_onnx, store, s, client, bucket) for s in shards]
    return store, shards, client, bucket, stagers


def _meta():
    return build_metadata(run_id="r1", logical_date="2026-11-26T02:00:00", params={"num_grids": 5},
                          export=None, convert=None, postprocess={"grids": 5, "gate": "accepted"})


def _publish(store, client, bucket, tmp_path, lines=None):
    return publish_run(store, client, bucket, PREFIX, metadata=_meta(), tmp_dir=tmp_path / f"p{time.monotonic_ns()}",
                       log=(lines.append if lines is not None else lambda m: None))


def _manifest(client, bucket):
    return json.loads(client.get_object(Bucket=bucket, Key=f"{PREFIX}/manifest.json")["Body"].read())


def test_staged_grids_are_in_the_bucket_before_publish_and_the_manifest_names_them(
        staged, upstream_checkpoint, tmp_path):
    store, shards, client, bucket, stagers = staged
    # before publish: every grid is in the bucket under its shard's own attempt; no manifest, no latest
    before = _keys(client, bucket)
    assert [k.rsplit("/", 1)[1] for k in before] == [f"grid_0000000{i}.png" for i in range(5)]
    assert {k.rsplit("/grids/", 1)[0] for k in before} == {s.root for s in stagers}
    assert store.list("grids") == []  # no PNG written to (or read back from) the workspace
    lines: list[str] = []
    summary = postprocess_run(store, shards, upstream_checkpoint, log=lines.append)
    assert summary["grids"] == 5 and "shard 1 staged in the publish bucket during inference" in lines[-1]
    published = _publish(store, client, bucket, tmp_path)
    manifest = _manifest(client, bucket)
    grids = [o for o in manifest["objects"] if "/grids/" in o["key"]]
    assert sorted(o["key"] for o in grids) == before  # named where they were staged
    for obj in manifest["objects"]:
        body = client.get_object(Bucket=bucket, Key=obj["key"])["Body"].read()
        assert len(body) == obj["size"] and hashlib.sha256(body).hexdigest() == obj["sha256"]
    assert published.objects == len(manifest["objects"]) and f"{published.root}/quality/quality.json" in {
        o["key"] for o in manifest["objects"]}
    assert json.loads(client.get_object(Bucket=bucket, Key=LATEST_NAME)["Body"].read())["manifest"] == \
        f"{PREFIX}/manifest.json"
    rel = relative_objects(manifest, PREFIX)
    assert {f"grids/grid_0000000{i}.png" for i in range(5)} | {"quality/quality.json", "perf/perf.json"} <= set(rel)
    # the gallery reads the run: its grids (from the shard attempts), perf and quality (the publish attempt)
    cache = gallery.ManifestCache()
    detail = gallery.load_run(client, bucket, "r1", cache=cache)
    assert detail.grids == [f"grids/grid_0000000{i}.png" for i in range(5)] and not detail.problems
    assert detail.quality["grids"] == 5 and "_object_keys" not in detail.manifest
    png = gallery.open_png(client, bucket, "r1", "grids/grid_00000004.png", cache=cache)
    assert png.key == rel["grids/grid_00000004.png"][0] and png.body.read()[:4] == b"\x89PNG"


@pytest.mark.parametrize("damage", ["missing", "short"])
def test_a_missing_or_short_staged_grid_fails_publish_and_nothing_is_published(
        staged, upstream_checkpoint, tmp_path, damage):
    store, shards, client, bucket, stagers = staged
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    key = f"{stagers[1].root}/grids/grid_00000003.png"
    if damage == "missing":
        client.delete_object(Bucket=bucket, Key=key)
    else:
        client.put_object(Bucket=bucket, Key=key, Body=b"\x89PNG short")
    before = _keys(client, bucket)
    with pytest.raises(StagedGridsError, match=rf"shard 1: the staged grid s3://{bucket}/{key} is "
                                               rf"{'missing' if damage == 'missing' else '10 bytes'}.*nothing was "
                                               r"published. Clear the shard's inference task \(map index 1\)"):
        _publish(store, client, bucket, tmp_path)
    assert _keys(client, bucket) == before  # no manifest, no latest.json, no publish attempt


def test_a_retried_shards_stale_attempt_is_removed_at_publish_and_a_rerun_never_touches_the_published_run(
        staged, upstream_checkpoint, upstream_onnx, tmp_path):
    store, shards, client, bucket, stagers = staged
    stale = stagers[0]
    retry = run_shard(tmp_path, upstream_onnx, store, shards[0], client, bucket)  # a second try of shard 0
    assert stale.root != retry.root and len(_keys(client, bucket, stale.root + "/")) == 3
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    lines: list[str] = []
    _publish(store, client, bucket, tmp_path, lines)
    first = _manifest(client, bucket)
    named = {o["key"] for o in first["objects"]}
    assert not _keys(client, bucket, stale.root + "/")  # the failed try's grids, removed after the switch
    assert any("removed 3 object(s)" in line for line in lines), lines
    assert {k for k in named if "/grids/" in k} == set(_keys(client, bucket, retry.root + "/")) | set(
        _keys(client, bucket, stagers[1].root + "/"))
    bodies = {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in named}
    # shard 0 runs again after the run was published: a new attempt, the published objects untouched
    rerun = run_shard(tmp_path, upstream_onnx, store, shards[0], client, bucket)
    assert {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in named} == bodies
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    _publish(store, client, bucket, tmp_path)
    second = _manifest(client, bucket)
    assert {o["key"] for o in second["objects"] if o["key"].startswith(rerun.root)}  # names the re-run's grids
    # the replaced manifest's objects stay for readers of it until the next publish
    assert all(client.head_object(Bucket=bucket, Key=k) for k in named)
    _publish(store, client, bucket, tmp_path)
    assert not _keys(client, bucket, retry.root + "/") and _keys(client, bucket, rerun.root + "/")
    third = _manifest(client, bucket)
    assert all(client.head_object(Bucket=bucket, Key=o["key"])["ContentLength"] == o["size"]
               for o in third["objects"])


def test_a_failed_runs_staged_grids_are_removed_after_the_retention(staged, upstream_checkpoint, upstream_onnx,
                                                                    tmp_path):
    store, shards, client, bucket, _ = staged  # runs/r1: staged, never published (the run failed)
    young = open_store((tmp_path / "ws2").as_uri())
    run_shard(tmp_path, upstream_onnx, young, shards[0], client, bucket, prefix="runs/r2")  # failed later
    published = open_store((tmp_path / "ws3").as_uri())
    for shard in shards:
        run_shard(tmp_path, upstream_onnx, published, shard, client, bucket, prefix="runs/r3")
    postprocess_run(published, shards, upstream_checkpoint, log=lambda m: None)
    publish_run(published, client, bucket, "runs/r3", metadata=_meta(), tmp_dir=tmp_path / "p3", log=lambda m: None)
    r3 = _keys(client, bucket, "runs/r3/")
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
