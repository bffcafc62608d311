"""Object storage faults during publish, on real SeaweedFS servers: the server dies mid-publish,
a re-publish over an existing run, wrong credentials, a missing bucket, a server that is down.

The promise: a run is published completely and correctly or not at all (no manifest), the
failure says why, and a retry is always safe."""

from __future__ import annotations

import hashlib
import json
import logging
import threading

import pytest
from airflow.sdk.exceptions import AirflowFailException

from cgan.publishing.publish import LATEST_NAME, PublishConfigError, PublishError, publish_run
from tests.reliability.conftest import check_manifest_complete, get, listing, metadata

BUCKET = "rel-publish"


@pytest.mark.slow
def test_store_killed_mid_publish_publishes_nothing_and_a_retry_publishes_all(finished_workspace, own_s3, tmp_path,
                                                                            monkeypatch):
    store, _ = finished_workspace
    # One upload at a time, so the kill below lands while objects are still to be uploaded (with
    # eight in flight, a small run's uploads can all finish before the kill takes effect).
    monkeypatch.setattr("cgan.publishing.publish.PUBLISH_THREADS", 1)
    client = own_s3.client(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=5)
    client.create_bucket(Bucket=BUCKET)
    publish_run(store, client, BUCKET, "runs/r0", metadata=metadata("2026-11-25T02:00:00+00:00", "r0"),
                tmp_dir=tmp_path / "t0", log=lambda m: None)
    latest_before = get(client, BUCKET, LATEST_NAME)
    total = len(store.list("packs") + store.list("perf") + store.list("quality"))  # packs: tar + index each
    assert 8 <= total < 20  # small run: the log callback is called once per object

    lines = []

    def log_and_kill(message: str) -> None:
        lines.append(message)
        if message.startswith("uploaded 3/"):
            own_s3.kill()  # SIGKILL, mid-publish, after 3 objects were uploaded

    with pytest.raises(PublishError) as err:
        publish_run(store, client, BUCKET, "runs/r1", metadata=metadata("2026-11-26T02:00:00+00:00", "r1"),
                    tmp_dir=tmp_path / "t1", log=log_and_kill)
    assert not isinstance(err.value, PublishConfigError)  # a dead store is worth a retry
    assert "upload of s3://rel-publish/runs/r1/" in str(err.value) and "failed" in str(err.value)
    # uploads run a few at a time, so the ones already in flight may still land: the publish
    # stopped part-way, after at least the 3 objects seen before the kill
    done = int(lines[-1].split()[1].split("/")[0])
    assert lines[-1].endswith(f"/{total} object(s) of the workspace") and 3 <= done < total

    own_s3.start()  # the same data dir and port
    client = own_s3.client()
    keys = listing(client, BUCKET)
    assert "runs/r1/manifest.json" not in keys  # not published ...
    from cgan.publishing.publish import PUBLISH_THREADS

    landed = [k for k in keys if k.startswith("runs/r1/")]
    assert len(landed) <= done + PUBLISH_THREADS  # ... even if some objects (those in flight) landed
    assert read_when_serving(client, BUCKET, LATEST_NAME) == latest_before  # latest.json still names r0
    check_manifest_complete(client, BUCKET, "runs/r0/manifest.json")  # the older run is untouched

    published = publish_run(store, client, BUCKET, "runs/r1",
                            metadata=metadata("2026-11-26T02:00:00+00:00", "r1"), tmp_dir=tmp_path / "t2",
                            log=lambda m: None)
    manifest = check_manifest_complete(client, BUCKET, "runs/r1/manifest.json")
    assert len(manifest["objects"]) + 2 * len(manifest["packs"]) == total == published.objects
    assert manifest["grids"] == 6 and published.packs == len(manifest["packs"]) == 2
    assert json.loads(get(client, BUCKET, LATEST_NAME))["manifest"] == "runs/r1/manifest.json"


def verify_published(client, bucket: str, manifest_key: str) -> dict:
    """What a reader does: the manifest, then every object it lists and every pack and pack index,
    each checked by sha256."""
    manifest = json.loads(get(client, bucket, manifest_key))
    for obj in manifest["objects"] + manifest["packs"] + [p["index"] for p in manifest["packs"]]:
        body = get(client, bucket, obj["key"])
        assert hashlib.sha256(body).hexdigest() == obj["sha256"], obj["key"]
    return manifest


def read_when_serving(client, bucket: str, key: str, timeout: float = 60) -> bytes:
    """GET key once the restarted server serves data: its S3 port answers before its volume
    server has registered again (InternalError meanwhile)."""
    import time

    from botocore.exceptions import ClientError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(client, bucket, key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "InternalError" or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class Reader(threading.Thread):
    """Reads the published run over and over (latest.json -> manifest -> every object and pack by
    sha256, and the gallery's run page and its last grid, out of its pack) until stopped; every
    failure is kept."""

    def __init__(self, client, bucket: str, name: str):
        super().__init__(daemon=True)
        self.client, self.bucket, self.name = client, bucket, name
        self.stop, self.reads, self.failures, self.roots = threading.Event(), 0, [], set()

    def run(self) -> None:
        from cgan.publishing.gallery import ManifestCache, load_run, open_grid

        cache = ManifestCache(ttl_s=0)
        while not self.stop.is_set():
            try:
                manifest = verify_published(self.client, self.bucket, json.loads(get(self.client, self.bucket,
                                                                                       LATEST_NAME))["manifest"])
                run = load_run(self.client, self.bucket, self.name, cache=cache)
                assert run.problems == [] and run.grids == 6
                assert open_grid(self.client, self.bucket, self.name, run.grids - 1, cache=cache).data.startswith(
                    b"\x89PNG")
                self.roots.add(manifest["root"])
                self.reads += 1
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                self.failures.append(repr(exc))


@pytest.mark.slow
def test_republish_keeps_the_run_readable_while_a_reader_reads(finished_workspace, own_s3, tmp_path, monkeypatch):
    """A cleared and re-run run is published again (perf.json differs on every run) while a reader
    reads it: the reader never fails, it sees the old run and then the new one, never a mix; objects
    no manifest names (an earlier try's leftovers) are removed after the switch."""
    store, _ = finished_workspace
    monkeypatch.setattr("cgan.publishing.publish.PUBLISH_THREADS", 1)  # a slower publish: more reads land in it
    client = own_s3.client()
    client.create_bucket(Bucket=BUCKET)
    meta = metadata("2026-11-26T02:00:00+00:00")
    first = publish_run(store, client, BUCKET, "runs/r", metadata=meta, tmp_dir=tmp_path / "a", log=lambda m: None)
    strays = ["runs/r/packs/pack_00000099.tar", "runs/r/attempts/20000101T000000.000000Z-000000/packs/x.tar"]
    for key in strays:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"left by an earlier try")
    store.put_bytes(b'{"changed": true}', "perf/perf.json")  # the re-run's own perf record

    reader = Reader(own_s3.client(), BUCKET, "r")
    seen, mid = [], []

    def log(message: str) -> None:
        seen.append(message)
        if message.startswith("uploaded "):  # mid re-publish: the old run verifies, object by object
            mid.append(verify_published(client, BUCKET, "runs/r/manifest.json")["root"])

    reader.start()
    try:
        second = publish_run(store, client, BUCKET, "runs/r", metadata=meta, tmp_dir=tmp_path / "b", log=log)
        reader.stop.wait(1.0)  # a few reads of the new run too
    finally:
        reader.stop.set()
        reader.join(30)
    assert reader.failures == [] and reader.reads >= 2
    assert mid and set(mid) == {first.root}  # while uploading, the published run was the old one, whole
    assert reader.roots <= {first.root, second.root} and second.root in reader.roots
    assert any("stayed readable" in m for m in seen)
    assert any("removed 2 object(s)" in m for m in seen), seen
    manifest = check_manifest_complete(client, BUCKET, "runs/r/manifest.json")
    assert manifest["root"] == second.root != first.root
    assert get(client, BUCKET, f"{second.root}/perf/perf.json") == b'{"changed": true}'
    keys = listing(client, BUCKET, "runs/r/")
    assert not set(strays) & set(keys)
    assert any(k.startswith(first.root + "/") for k in keys)  # kept for readers of the old manifest


@pytest.mark.slow
def test_store_killed_mid_republish_leaves_the_published_run_whole(finished_workspace, own_s3, tmp_path,
                                                                  monkeypatch):
    """Before attempts, a re-publish deleted the run's manifest first: a failure then left the run
    unpublished and latest.json naming a missing manifest. Now the old run stays published."""
    store, _ = finished_workspace
    monkeypatch.setattr("cgan.publishing.publish.PUBLISH_THREADS", 1)
    client = own_s3.client(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=5)
    client.create_bucket(Bucket=BUCKET)
    first = publish_run(store, client, BUCKET, "runs/r", metadata=metadata("2026-11-26T02:00:00+00:00"),
                        tmp_dir=tmp_path / "a", log=lambda m: None)
    latest_before = get(client, BUCKET, LATEST_NAME)
    store.put_bytes(b'{"changed": true}', "perf/perf.json")

    def log_and_kill(message: str) -> None:
        if message.startswith("uploaded 3/"):
            own_s3.kill()

    with pytest.raises(PublishError):
        publish_run(store, client, BUCKET, "runs/r", metadata=metadata("2026-11-26T02:00:00+00:00"),
                    tmp_dir=tmp_path / "b", log=log_and_kill)
    own_s3.start()
    client = own_s3.client()
    assert read_when_serving(client, BUCKET, LATEST_NAME) == latest_before
    assert check_manifest_complete(client, BUCKET, "runs/r/manifest.json")["root"] == first.root  # still whole
    second = publish_run(store, client, BUCKET, "runs/r", metadata=metadata("2026-11-26T02:00:00+00:00"),
                         tmp_dir=tmp_path / "c", log=lambda m: None)
    assert check_manifest_complete(client, BUCKET, "runs/r/manifest.json")["root"] == second.root
    assert get(client, BUCKET, f"{second.root}/perf/perf.json") == b'{"changed": true}'


@pytest.mark.parametrize("other_date,expected", [("2026-11-27T02:00:00+00:00", "newer"),
                                                  ("2026-11-25T02:00:00+00:00", "ours")])
def test_latest_json_changed_meanwhile_is_read_again(finished_workspace, local_s3, tmp_path, other_date, expected):
    """Another writer moves latest.json between this publish's read and its write: the conditional
    write is refused (412), latest.json is read again, and an older run never replaces a newer one."""
    import boto3

    store, _ = finished_workspace
    bucket = f"rel-latest-race-{expected}"
    local_s3["client"].create_bucket(Bucket=bucket)
    other = {"manifest": "runs/other/manifest.json", "logical_date": other_date}
    client = boto3.client("s3", endpoint_url=local_s3["endpoint"], region_name="us-east-1",
                          aws_access_key_id=local_s3["access_key"], aws_secret_access_key=local_s3["secret_key"])
    raced = []

    def interloper(request, **kwargs):  # right before our write of latest.json, once
        if request.url.endswith(f"/{LATEST_NAME}") and not raced:
            raced.append(local_s3["client"].put_object(Bucket=bucket, Key=LATEST_NAME,
                                                       Body=json.dumps(other).encode()))

    client.meta.events.register("before-sign.s3.PutObject", interloper)
    lines = []
    publish_run(store, client, bucket, "runs/r", metadata=metadata("2026-11-26T02:00:00+00:00"), tmp_dir=tmp_path,
                log=lines.append)
    latest = json.loads(get(client, bucket, LATEST_NAME))
    assert raced and any("latest.json changed while it was being updated" in m for m in lines), lines
    if expected == "newer":
        assert latest["manifest"] == other["manifest"] and any("latest.json kept" in m for m in lines)
    else:
        assert latest["manifest"] == "runs/r/manifest.json"


def test_a_publish_of_the_same_run_that_switched_first_wins(finished_workspace, local_s3, tmp_path):
    """Two publishes of one run at once (a zombie try and its retry, say): the one whose manifest
    write comes second is refused, because the manifest is no longer the one it read."""
    store, _ = finished_workspace
    client = local_s3["client"]
    client.create_bucket(Bucket="rel-same-run")
    winner = []

    def log(message: str) -> None:
        if message.startswith("uploaded 1/") and not winner:
            winner.append(publish_run(store, client, "rel-same-run", "runs/r", metadata=metadata(None),
                                      tmp_dir=tmp_path / "winner", log=lambda m: None))

    with pytest.raises(PublishError, match="changed while this publish ran") as err:
        publish_run(store, client, "rel-same-run", "runs/r", metadata=metadata(None), tmp_dir=tmp_path / "late",
                    log=log)
    assert not isinstance(err.value, PublishConfigError)  # a retry publishes it
    manifest = verify_published(client, "rel-same-run", "runs/r/manifest.json")
    assert manifest["root"] == winner[0].root


@pytest.mark.parametrize("republish", [False, True], ids=["first-publish", "re-publish"])
def test_a_lost_answer_to_the_applied_manifest_write_is_a_publish_not_a_lost_race(finished_workspace, local_s3,
                                                                                  tmp_path, republish):
    """The manifest PUT is applied, its answer lost on the way back (a proxy closes the connection);
    botocore sends it again and gets 412 (If-None-Match / If-Match no longer hold). Before: "another
    publish of the same run", latest.json, cleanup and the asset event skipped. Now: the manifest
    there is this publish's own, so the run is published and latest.json moves; the same for a
    lost answer to latest.json's write."""
    import boto3

    from tests.faultproxy import FaultProxy

    store, _ = finished_workspace
    bucket = "rel-lost-" + ("re" if republish else "first")
    local_s3["client"].create_bucket(Bucket=bucket)
    if republish:
        publish_run(store, local_s3["client"], bucket, "runs/r", metadata=metadata("2026-11-25T02:00:00"),
                    tmp_dir=tmp_path / "first", log=lambda m: None)
    with FaultProxy(local_s3["endpoint"]) as proxy:
        proxy.add("PUT", rf"^/{bucket}/runs/r/manifest\.json$", "drop")
        proxy.add("PUT", rf"^/{bucket}/latest\.json$", "drop")
        client = boto3.client("s3", endpoint_url=proxy.endpoint, region_name="us-east-1",
                              aws_access_key_id=local_s3["access_key"], aws_secret_access_key=local_s3["secret_key"])
        lines: list[str] = []
        published = publish_run(store, client, bucket, "runs/r", metadata=metadata("2026-11-26T02:00:00"),
                                tmp_dir=tmp_path / "t", log=lines.append)
        puts = [(m, p, a) for m, p, a in proxy.seen if m == "PUT" and p.endswith(("manifest.json", "latest.json"))]
    assert [a for _, p, a in puts if p.endswith("manifest.json")][:2] == ["drop", "pass"]  # sent twice
    assert [a for _, p, a in puts if p.endswith("latest.json")][:2] == ["drop", "pass"]
    assert any("the manifest there is this publish's own" in m for m in lines)
    manifest = verify_published_whole(local_s3["client"], bucket)
    assert manifest["root"] == published.root
    assert json.loads(get(local_s3["client"], bucket, LATEST_NAME))["manifest"] == "runs/r/manifest.json"


def verify_published_whole(client, bucket: str) -> dict:
    check_manifest_complete(client, bucket, "runs/r/manifest.json")
    return json.loads(get(client, bucket, "runs/r/manifest.json"))


def test_without_conditional_writes_publish_falls_back_and_says_so(finished_workspace, local_s3, tmp_path):
    """A server that ignores If-Match / If-None-Match (SeaweedFS before 2025-08): the probe sees it,
    publish writes unconditionally (last writer wins) and the log says which path was taken."""
    from tests.cgan.storage.test_s3 import ignoring_conditions_client

    store, _ = finished_workspace
    local_s3["client"].create_bucket(Bucket="rel-legacy")
    client = ignoring_conditions_client(local_s3)
    lines = []
    published = publish_run(store, client, "rel-legacy", "runs/r", metadata=metadata(None), tmp_dir=tmp_path,
                            log=lines.append)
    assert not published.conditional and any("NOT honoured" in m for m in lines)
    check_manifest_complete(client, "rel-legacy", "runs/r/manifest.json")
    assert json.loads(get(client, "rel-legacy", LATEST_NAME))["manifest"] == "runs/r/manifest.json"
    conditional = publish_run(store, local_s3["client"], "rel-legacy", "runs/s", metadata=metadata(None),
                              tmp_dir=tmp_path / "2", log=lambda m: None)
    assert conditional.conditional


def test_corrupt_latest_json_is_replaced_not_fatal(finished_workspace, local_s3, tmp_path):
    store, _ = finished_workspace
    client = local_s3["client"]
    client.create_bucket(Bucket="rel-latest")
    client.put_object(Bucket="rel-latest", Key=LATEST_NAME, Body=b"{not json")
    lines = []
    publish_run(store, client, "rel-latest", "runs/r", metadata=metadata(None), tmp_dir=tmp_path, log=lines.append)
    assert json.loads(get(client, "rel-latest", LATEST_NAME))["manifest"] == "runs/r/manifest.json"
    assert any("latest.json is replaced" in m for m in lines)
    # a run without a logical date, then one with: no comparison of None with a date
    publish_run(store, client, "rel-latest", "runs/s", metadata=metadata("2026-11-26T02:00:00+00:00"),
                tmp_dir=tmp_path / "2", log=lambda m: None)
    assert json.loads(get(client, "rel-latest", LATEST_NAME))["manifest"] == "runs/s/manifest.json"


# --- through PublishRunOperator: the connection id, the bucket, never the secret --------------


class FakeTI:
    dag_id = "cgan_generation"
    run_id = "manual__2026-11-26T02:00:00+00:00"

    def __init__(self):
        self.pushed = {}

    def xcom_pull(self, task_ids=None, key=None):
        return {"postprocess": {"grids": 6}, "export_onnx": {"onnx_sha256": "ab"}}.get(task_ids)

    def xcom_push(self, key, value):
        self.pushed[key] = value


def run_publish_operator(monkeypatch, workspace, conn: str, bucket: str, conn_id: str = "cgan_s3_rel"):
    from operators.publish import PublishRunOperator

    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn)
    op = PublishRunOperator(task_id="publish", workspace=workspace.uri, bucket=bucket,
                            run_prefix="runs/op", params_used={"num_grids": 6},
                            logical_date="2026-11-26T02:00:00+00:00", aws_conn_id=conn_id)
    ti = FakeTI()
    return op, ti, lambda: op.execute({"ti": ti})


@pytest.fixture
def all_logs(caplog):
    """Every log record of every logger, botocore's request dumps included."""
    caplog.set_level(logging.DEBUG)
    return caplog


def test_wrong_secret_names_connection_and_bucket_never_the_secret(finished_workspace, local_s3, monkeypatch,
                                                                   all_logs):
    from tests.airflow_stack import s3_connection

    client = local_s3["client"]
    client.create_bucket(Bucket="rel-creds")
    wrong = "wrong-" + local_s3["secret_key"][::-1]
    _, _, execute = run_publish_operator(
        monkeypatch, finished_workspace[0], s3_connection(local_s3["endpoint"], local_s3["access_key"], wrong),
        "rel-creds")
    with pytest.raises(AirflowFailException) as err:  # a retry cannot fix credentials: no retries
        execute()
    text = str(err.value)
    assert isinstance(err.value.__context__, PublishConfigError)  # kept, its traceback not printed
    assert "cgan_s3_rel" in text and "rel-creds" in text and "credentials" in text and "403" in text
    assert local_s3["endpoint"] in text
    for secret in (wrong, local_s3["secret_key"]):
        assert secret not in text
        assert secret not in all_logs.text
        assert secret not in repr(err.value.__context__) and secret not in repr(err.value.__context__.__cause__)
    assert all_logs.text  # the logs were really captured (botocore's request dumps included)
    assert client.list_objects_v2(Bucket="rel-creds")["KeyCount"] == 0


def test_missing_bucket_names_connection_and_bucket(finished_workspace, local_s3, monkeypatch, all_logs):
    from tests.airflow_stack import s3_connection

    _, _, execute = run_publish_operator(
        monkeypatch, finished_workspace[0],
        s3_connection(local_s3["endpoint"], local_s3["access_key"], local_s3["secret_key"]), "rel-no-such-bucket")
    with pytest.raises(AirflowFailException) as err:
        execute()
    text = str(err.value)
    assert "cgan_s3_rel" in text and "s3://rel-no-such-bucket/" in text and "create the bucket" in text
    assert local_s3["secret_key"] not in text + all_logs.text


def test_store_down_keeps_retries_and_says_where(finished_workspace, monkeypatch):
    from scripts.local_s3 import free_port_block
    from tests.airflow_stack import s3_connection

    endpoint = f"http://127.0.0.1:{free_port_block()}"  # nothing listens there
    conn = json.loads(s3_connection(endpoint, "k", "s3cr3t-never-shown"))
    conn["extra"]["config_kwargs"]["retries"] = {"max_attempts": 1}
    _, _, execute = run_publish_operator(monkeypatch, finished_workspace[0], json.dumps(conn), "rel-down")
    with pytest.raises(PublishError) as err:  # not AirflowFailException: the task's retries apply
        execute()
    assert not isinstance(err.value, PublishConfigError)
    text = str(err.value)
    assert "cgan_s3_rel" in text and "rel-down" in text and endpoint in text and "retries" in text
    assert "s3cr3t-never-shown" not in text


def test_publish_success_through_the_operator_keeps_secrets_out_of_xcom(finished_workspace, local_s3, monkeypatch,
                                                                      all_logs):
    from tests.airflow_stack import s3_connection

    local_s3["client"].create_bucket(Bucket="rel-op-ok")
    op, ti, execute = run_publish_operator(
        monkeypatch, finished_workspace[0],
        s3_connection(local_s3["endpoint"], local_s3["access_key"], local_s3["secret_key"]), "rel-op-ok")
    result = execute()
    assert result["manifest"] == "runs/op/manifest.json"
    check_manifest_complete(local_s3["client"], "rel-op-ok", "runs/op/manifest.json")
    shown = json.dumps(result) + json.dumps(ti.pushed) + all_logs.text
    shown += get(local_s3["client"], "rel-op-ok", "runs/op/manifest.json").decode()
    assert local_s3["secret_key"] not in shown
    # the "Published run" link: the DAG run's Gallery tab inside Airflow, the run id URL-encoded
    assert ti.pushed["published_url"] == ("/dags/cgan_generation/runs/manual__2026-11-26T02%3A00%3A00%2B00%3A00"
                                          "/plugin/cgan-gallery-run")


def test_multipart_uploads_carry_a_sha256_per_part(finished_workspace, local_s3, tmp_path, monkeypatch):
    """Objects at or above the multipart threshold go up in parts, each with its SHA-256 for the
    server to verify; the manifest's sha256 is of the whole file, and it matches what is stored."""
    store, _ = finished_workspace
    monkeypatch.setattr("cgan.publishing.publish.MULTIPART_THRESHOLD", 16 * 1024)  # latency.png, packs go multipart
    client = local_s3["client"]
    client.create_bucket(Bucket="rel-multipart")
    parts = []
    client.meta.events.register("before-call.s3.UploadPart", lambda params, **kw: parts.append(params))
    published = publish_run(store, client, "rel-multipart", "runs/r", metadata=metadata(None), tmp_dir=tmp_path,
                            log=lambda m: None)
    manifest = check_manifest_complete(client, "rel-multipart", "runs/r/manifest.json")
    big = [o for o in manifest["objects"] + manifest["packs"] if o["size"] >= 16 * 1024]
    assert big and len(parts) >= len(big) and [p for p in big if p["key"].endswith(".tar")]
    assert all(p["headers"].get("x-amz-checksum-sha256") or p["headers"].get("x-amz-trailer") for p in parts), \
        [p["headers"] for p in parts]
    head = client.head_object(Bucket="rel-multipart", Key=big[0]["key"], ChecksumMode="ENABLED")
    assert head.get("ChecksumSHA256"), head  # the server kept the SHA-256 it was given
    assert published.objects == len(manifest["objects"]) + 2 * len(manifest["packs"])
