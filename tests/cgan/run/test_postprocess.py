"""A run's workspace through postprocess and publish, on a real S3-compatible server."""

import hashlib
import json

import pytest

from cgan.errors import InferenceError
from cgan.layout.packs import PackIndex, read_members
from cgan.layout.workspace import STAGED_KEY
from cgan.publishing.publish import LATEST_NAME, PublishConfigError, PublishError, build_metadata, publish_run
from cgan.run.postprocess import postprocess_run
from tests.workspaces import make_workspace


@pytest.fixture
def workspace(tmp_path, upstream_onnx, upstream_checkpoint):
    """A workspace as the inference tasks leave it: bins and outputs of 3 grids in 2 shards."""
    return make_workspace(tmp_path / "ws", upstream_onnx, upstream_checkpoint, grids=3, per_shard=2,
                          postprocess=False)


def test_postprocess_writes_grids_quality_and_pooled_perf(workspace, upstream_checkpoint):
    store, shards = workspace
    lines = []
    summary = postprocess_run(store, shards, upstream_checkpoint, log=lines.append)
    assert store.list("packs") == PACKS and store.list("grids") == []  # one pack per shard, no PNG objects
    assert [name for key in PACKS[1::2] for name, _ in read_members(store.path(key))] == [
        f"grid_0000000{i}.png" for i in range(3)]
    staged = json.loads(store.get_bytes(STAGED_KEY))
    assert staged["version"] == 2 and [(s["shard"], s["bucket"], s["root"]) for s in staged["shards"]] == [
        (0, None, None), (1, None, None)]
    for shard, first, count in zip(staged["shards"], (0, 2), (2, 1), strict=True):
        (pack,) = shard["packs"]
        raw = store.get_bytes(pack["key"])
        assert (pack["first"], pack["count"], pack["size"]) == (first, count, len(raw))
        assert hashlib.sha256(raw).hexdigest() == pack["sha256"] == PackIndex.from_json(
            store.get_bytes(pack["index"]["key"]), first=first, count=count).sha256
    quality = json.loads(store.get_bytes("quality/quality.json"))
    assert quality["grids"] == 3 and quality["parity_max_abs_err"] <= 1e-5 and quality["parity_grids_checked"] == 3
    assert quality["precision"] == summary["precision"] == "fp32" and quality["parity_ok"] is True
    perf = json.loads(store.get_bytes("perf/perf.json"))
    assert perf["shards"] == 2 and perf["calls"] == 3 and perf["grids"] == 3
    assert "never multiplied" in perf["notes"][-1]
    assert store.get_bytes("perf/latency.png")[:4] == b"\x89PNG"
    assert {"perf/shard_0000.perf.json", "perf/shard_0001.perf.json"} <= set(store.list("perf"))
    assert lines[-1] == "grids 3/3" and summary["grids"] == 3


def test_incomplete_shard_is_refused(workspace, upstream_checkpoint):
    store, shards = workspace
    store.path("outputs/shard_0001/grid_00000002_output_0.bin").unlink()
    with pytest.raises(InferenceError, match="shard 1 is incomplete: 1 of 1 output bins missing"):
        postprocess_run(store, shards, upstream_checkpoint)


PACKS = ["packs/pack_00000000.json", "packs/pack_00000000.tar", "packs/pack_00000002.json",
         "packs/pack_00000002.tar"]


def _meta(logical_date):
    return build_metadata(run_id="r", logical_date=logical_date, params={"num_grids": 3},
                          export={"onnx_sha256": "ab", "checkpoint_sha256": "cd"}, convert=None,
                          postprocess={"grids": 3})


def record_writes(client) -> list[str]:
    """The keys of completed object writes, in the order the server acknowledged them."""
    done: list[str] = []

    def remember(params, context, **kwargs):
        context["recorded_key"] = params.get("Key")

    def acknowledged(context, http_response, **kwargs):
        if 200 <= http_response.status_code < 300:
            done.append(context.get("recorded_key"))

    events = client.meta.events
    for op in ("PutObject", "CompleteMultipartUpload", "CopyObject"):
        events.register(f"provide-client-params.s3.{op}", remember)
        events.register(f"after-call.s3.{op}", acknowledged)
    return done


def test_publish_manifest_last_and_idempotent(workspace, upstream_checkpoint, local_s3, tmp_path):
    import boto3

    store, shards = workspace
    postprocess_run(store, shards, upstream_checkpoint)
    client = boto3.client("s3", endpoint_url=local_s3["endpoint"], region_name="us-east-1",
                          aws_access_key_id=local_s3["access_key"],
                          aws_secret_access_key=local_s3["secret_key"])  # its own event hooks
    client.create_bucket(Bucket="pub-test")
    writes = record_writes(client)
    published = publish_run(store, client, "pub-test", "runs/r1", metadata=_meta("2026-11-26T02:00:00"),
                            tmp_dir=tmp_path / "t1", log=lambda m: None)
    manifest = json.loads(client.get_object(Bucket="pub-test", Key="runs/r1/manifest.json")["Body"].read())
    root = manifest["root"]  # the objects of one publish attempt lie under runs/r1/attempts/<attempt>/
    assert root == f"runs/r1/attempts/{manifest['attempt']}" == published.root
    assert manifest["version"] == 2 and manifest["grids"] == 3
    reports = {o["key"] for o in manifest["objects"]}
    assert {f"{root}/quality/quality.json", f"{root}/perf/perf.json", f"{root}/perf/latency.png"} <= reports
    assert not [k for k in reports if "/packs/" in k or "/grids/" in k]  # grids are in `packs`, not objects
    # the workspace's packs, copied into the publish attempt, cover grids 0..2
    assert [(p["key"], p["index"]["key"], p["first"], p["count"]) for p in manifest["packs"]] == [
        (f"{root}/packs/pack_00000000.tar", f"{root}/packs/pack_00000000.json", 0, 2),
        (f"{root}/packs/pack_00000002.tar", f"{root}/packs/pack_00000002.json", 2, 1)]
    assert published.packs == 2 and published.objects == len(manifest["objects"]) + 4
    entries = manifest["objects"] + manifest["packs"] + [p["index"] for p in manifest["packs"]]
    for obj in entries:
        body = client.get_object(Bucket="pub-test", Key=obj["key"])["Body"].read()
        assert len(body) == obj["size"] and hashlib.sha256(body).hexdigest() == obj["sha256"]
    keys = {o["key"] for o in entries}
    assert published.bytes == sum(o["size"] for o in entries)
    assert manifest["params"] == {"num_grids": 3} and manifest["model"]["onnx_sha256"] == "ab"
    assert manifest["tools"]["onnxruntime"] != "not installed"
    latest = json.loads(client.get_object(Bucket="pub-test", Key=LATEST_NAME)["Body"].read())
    assert latest["manifest"] == "runs/r1/manifest.json" == published.manifest_key
    # manifest last: written once every object it lists was acknowledged, latest.json after it
    assert keys <= set(writes) and writes.count("runs/r1/manifest.json") == 1, writes
    at = writes.index("runs/r1/manifest.json")
    assert max(writes.index(k) for k in keys) < at < writes.index(LATEST_NAME), writes

    def listing():
        return sorted(o["Key"] for o in client.list_objects_v2(Bucket="pub-test")["Contents"])

    def relative(m):
        named = m["objects"] + m["packs"] + [p["index"] for p in m["packs"]]
        return sorted((o["key"][len(m["root"]):], o["sha256"]) for o in named)

    def named(m):
        return {o["key"] for o in m["objects"]} | {k for p in m["packs"] for k in (p["key"], p["index"]["key"])}

    before = listing()
    second = publish_run(store, client, "pub-test", "runs/r1", metadata=_meta("2026-11-26T02:00:00"),
                         tmp_dir=tmp_path / "t2", log=lambda m: None)
    manifest2 = json.loads(client.get_object(Bucket="pub-test", Key="runs/r1/manifest.json")["Body"].read())
    assert second.root != root and relative(manifest2) == relative(manifest)  # the same objects, a new attempt
    # the replaced attempt stays for readers that read the old manifest; nothing else is added
    assert listing() == sorted(set(before) | named(manifest2))
    assert named(manifest) <= set(listing())  # the replaced manifest's packs are still there to read
    publish_run(store, client, "pub-test", "runs/r1", metadata=_meta("2026-11-26T02:00:00"),
                tmp_dir=tmp_path / "t2b", log=lambda m: None)
    assert not [k for k in listing() if k.startswith(root + "/")]  # the next publish removes the first attempt
    assert len({k.split("/")[3] for k in listing() if "/attempts/" in k}) == 2  # at most two attempts per run

    def latest_body():
        return client.get_object(Bucket="pub-test", Key=LATEST_NAME)["Body"].read()

    kept = latest_body()
    older = publish_run(store, client, "pub-test", "runs/r0", metadata=_meta("2026-11-25T02:00:00"),
                        tmp_dir=tmp_path / "t3", log=lambda m: None)
    # an older run is published (its manifest exists) but does not move latest back, not even
    # by rewriting it: the pointer's bytes are untouched
    assert older.manifest_key == "runs/r0/manifest.json" and "runs/r0/manifest.json" in listing()
    assert latest_body() == kept and json.loads(kept)["manifest"] == "runs/r1/manifest.json"
    # a newer run moves it forward; re-publishing the older one afterwards still does not
    publish_run(store, client, "pub-test", "runs/r2", metadata=_meta("2026-11-27T02:00:00"),
                tmp_dir=tmp_path / "t4", log=lambda m: None)
    assert json.loads(latest_body())["manifest"] == "runs/r2/manifest.json"
    publish_run(store, client, "pub-test", "runs/r1", metadata=_meta("2026-11-26T02:00:00"),
                tmp_dir=tmp_path / "t5", log=lambda m: None)
    assert json.loads(latest_body())["manifest"] == "runs/r2/manifest.json"


def test_a_publish_never_replaces_the_manifest_of_another_run(workspace, upstream_checkpoint, local_s3, tmp_path):
    """A run prefix whose manifest names another run id (a key two run ids shared before keys were
    injective) is refused before anything is written: that run stays as it was."""
    store, shards = workspace
    postprocess_run(store, shards, upstream_checkpoint)
    client = local_s3["client"]
    client.create_bucket(Bucket="pub-other")
    publish_run(store, client, "pub-other", "runs/x", metadata=_meta("2026-11-26T02:00:00"),
                tmp_dir=tmp_path / "a", log=lambda m: None)

    def listing():
        return {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket="pub-other")["Contents"]}

    before = listing()
    other = dict(_meta("2026-11-27T02:00:00"), run_id="-r")
    with pytest.raises(PublishConfigError, match="manifest of run 'r', not of this run '-r'"):
        publish_run(store, client, "pub-other", "runs/x", metadata=other, tmp_dir=tmp_path / "b", log=lambda m: None)
    assert listing() == before


def test_publish_without_postprocess_publishes_nothing(workspace, local_s3, tmp_path):
    store, _ = workspace
    client = local_s3["client"]
    client.create_bucket(Bucket="pub-empty")
    with pytest.raises(PublishError, match="postprocess did not finish"):
        publish_run(store, client, "pub-empty", "runs/x", metadata=_meta(None), tmp_dir=tmp_path)
    assert client.list_objects_v2(Bucket="pub-empty")["KeyCount"] == 0


def test_publish_to_a_missing_bucket_names_it(workspace, upstream_checkpoint, local_s3, tmp_path):
    store, shards = workspace
    postprocess_run(store, shards, upstream_checkpoint)
    with pytest.raises(PublishError, match="cannot use bucket s3://no-such-bucket/ .*create the bucket"):
        publish_run(store, local_s3["client"], "no-such-bucket", "runs/x", metadata=_meta(None), tmp_dir=tmp_path)


def test_a_body_corrupted_in_transit_is_refused_by_the_server_and_nothing_is_published(
        workspace, upstream_checkpoint, local_s3, tmp_path):
    import boto3

    store, shards = workspace
    postprocess_run(store, shards, upstream_checkpoint)
    client = boto3.client("s3", endpoint_url=local_s3["endpoint"], region_name="us-east-1",
                          aws_access_key_id=local_s3["access_key"],
                          aws_secret_access_key=local_s3["secret_key"])
    client.create_bucket(Bucket="pub-corrupt")

    def flip_last_byte(request, **kwargs):  # after signing and Content-MD5: a bad wire, say
        if request.url.endswith("pack_00000002.tar"):
            body = request.body.read() if hasattr(request.body, "read") else request.body
            request.body = body[:-1] + bytes([body[-1] ^ 1])

    client.meta.events.register("before-send.s3.PutObject", flip_last_byte)
    with pytest.raises(PublishError, match=r"pack_00000002\.tar failed.*(BadDigest|Content-Md5)"):
        publish_run(store, client, "pub-corrupt", "runs/r1", metadata=_meta("2026-11-26T02:00:00"),
                    tmp_dir=tmp_path / "t", log=lambda m: None)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="pub-corrupt").get("Contents", [])]
    assert "runs/r1/manifest.json" not in keys and LATEST_NAME not in keys
    assert not [k for k in keys if k.endswith("pack_00000002.tar")]


def test_a_rejected_run_is_published_for_inspection_and_latest_json_stays(workspace, upstream_checkpoint,
                                                                          local_s3, tmp_path):
    store, shards = workspace
    summary = postprocess_run(store, shards, upstream_checkpoint)  # an untrained generator: rejected
    assert summary["gate"] == "rejected"
    client = local_s3["client"]
    client.create_bucket(Bucket="pub-gate")
    good = build_metadata(run_id="ok", logical_date="2026-11-25T02:00:00", params={}, export=None, convert=None,
                          postprocess=dict(summary, gate="accepted", gate_failures=[]))
    publish_run(store, client, "pub-gate", "runs/ok", metadata=good, tmp_dir=tmp_path / "a", log=lambda m: None)
    lines: list[str] = []
    bad = build_metadata(run_id="bad", logical_date="2026-11-26T02:00:00", params={}, export=None, convert=None,
                         postprocess=summary)
    published = publish_run(store, client, "pub-gate", "runs/bad", metadata=bad, tmp_dir=tmp_path / "b",
                            log=lines.append)
    manifest = json.loads(client.get_object(Bucket="pub-gate", Key="runs/bad/manifest.json")["Body"].read())
    assert published.status == manifest["status"] == "rejected" and manifest["objects"]
    assert [p["first"] for p in manifest["packs"]] == [0, 2] and manifest["grids"] == 3
    assert manifest["summary"]["gate_failures"][0].startswith("label_accuracy")
    latest = json.loads(client.get_object(Bucket="pub-gate", Key=LATEST_NAME)["Body"].read())
    assert latest["manifest"] == "runs/ok/manifest.json"  # the newer run was rejected: latest stays
    assert any("latest.json kept: the run failed the quality gate" in line for line in lines)
