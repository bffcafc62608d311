"""Object storage faults during publish, on real SeaweedFS servers: the server dies mid-publish,
a re-publish over an existing run, wrong credentials, a missing bucket, a server that is down.

The promise: a run is published completely and correctly or not at all (no manifest), the
failure says why, and a retry is always safe."""

from __future__ import annotations

import json
import logging

import pytest
from airflow.sdk.exceptions import AirflowFailException

from cgan.publish import LATEST_NAME, PublishConfigError, PublishError, publish_run
from tests.reliability.conftest import check_manifest_complete, get, listing, metadata

BUCKET = "rel-publish"


@pytest.mark.slow
def test_store_killed_mid_publish_publishes_nothing_and_a_retry_publishes_all(finished_workspace, own_s3, tmp_path,
                                                                            monkeypatch):
    store, _ = finished_workspace
    # One upload at a time, so the kill below lands while objects are still to be uploaded (with
    # eight in flight, a small run's uploads can all finish before the kill takes effect).
    monkeypatch.setattr("cgan.publish.PUBLISH_THREADS", 1)
    client = own_s3.client(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=5)
    client.create_bucket(Bucket=BUCKET)
    publish_run(store, client, BUCKET, "runs/r0", metadata=metadata("2026-11-25T02:00:00+00:00", "r0"),
                tmp_dir=tmp_path / "t0", log=lambda m: None)
    latest_before = get(client, BUCKET, LATEST_NAME)
    total = len(store.list("grids") + store.list("perf") + store.list("quality"))
    assert total >= 8  # small run: the log callback is called once per object

    lines = []

    def log_and_kill(message: str) -> None:
        lines.append(message)
        if message.startswith("published 3/"):
            own_s3.kill()  # SIGKILL, mid-publish, after 3 objects were uploaded

    with pytest.raises(PublishError) as err:
        publish_run(store, client, BUCKET, "runs/r1", metadata=metadata("2026-11-26T02:00:00+00:00", "r1"),
                    tmp_dir=tmp_path / "t1", log=log_and_kill)
    assert not isinstance(err.value, PublishConfigError)  # a dead store is worth a retry
    assert "upload of s3://rel-publish/runs/r1/" in str(err.value) and "failed" in str(err.value)
    # uploads run a few at a time, so the ones already in flight may still land: the publish
    # stopped part-way, after at least the 3 objects seen before the kill
    done = int(lines[-1].split()[1].split("/")[0])
    assert lines[-1].endswith(f"/{total} objects") and 3 <= done < total

    own_s3.start()  # the same data dir and port
    client = own_s3.client()
    keys = listing(client, BUCKET)
    assert "runs/r1/manifest.json" not in keys  # not published ...
    from cgan.publish import PUBLISH_THREADS

    landed = [k for k in keys if k.startswith("runs/r1/")]
    assert len(landed) <= done + PUBLISH_THREADS  # ... even if some objects (those in flight) landed
    assert get(client, BUCKET, LATEST_NAME) == latest_before  # latest.json still names r0
    check_manifest_complete(client, BUCKET, "runs/r0/manifest.json")  # the older run is untouched

    published = publish_run(store, client, BUCKET, "runs/r1",
                            metadata=metadata("2026-11-26T02:00:00+00:00", "r1"), tmp_dir=tmp_path / "t2",
                            log=lambda m: None)
    manifest = check_manifest_complete(client, BUCKET, "runs/r1/manifest.json")
    assert len(manifest["objects"]) == total == published.objects
    assert json.loads(get(client, BUCKET, LATEST_NAME))["manifest"] == "runs/r1/manifest.json"


@pytest.mark.slow
def test_republish_unpublishes_first_and_removes_objects_the_run_no_longer_has(finished_workspace, own_s3, tmp_path):
    """A cleared and re-run run overwrites its objects (perf.json differs on every run): while it
    does, the old manifest must not claim hashes that no longer match; objects the new run does
    not have must not stay behind the new manifest."""
    store, _ = finished_workspace
    client = own_s3.client()
    client.create_bucket(Bucket=BUCKET)
    meta = metadata("2026-11-26T02:00:00+00:00")
    publish_run(store, client, BUCKET, "runs/r", metadata=meta, tmp_dir=tmp_path / "a", log=lambda m: None)
    client.put_object(Bucket=BUCKET, Key="runs/r/grids/grid_000099.png", Body=b"left by an earlier try")
    store.put_bytes(b'{"changed": true}', "perf/perf.json")  # the re-run's own perf record

    seen = []

    def log(message: str) -> None:
        seen.append(message)
        if message.startswith("published 1/"):  # mid re-publish: the old manifest is gone
            assert "runs/r/manifest.json" not in listing(client, BUCKET, "runs/r/")

    publish_run(store, client, BUCKET, "runs/r", metadata=meta, tmp_dir=tmp_path / "b", log=log)
    assert any("old manifest was removed first" in m for m in seen)
    assert any("removed 1 object(s)" in m and "grid_000099.png" in m for m in seen)
    manifest = check_manifest_complete(client, BUCKET, "runs/r/manifest.json")
    assert get(client, BUCKET, "runs/r/perf/perf.json") == b'{"changed": true}'
    assert "runs/r/grids/grid_000099.png" not in [o["key"] for o in manifest["objects"]]


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
    assert isinstance(err.value.__cause__, PublishConfigError)
    assert "cgan_s3_rel" in text and "rel-creds" in text and "credentials" in text and "403" in text
    assert local_s3["endpoint"] in text
    for secret in (wrong, local_s3["secret_key"]):
        assert secret not in text
        assert secret not in all_logs.text
        assert secret not in repr(err.value.__cause__) and secret not in repr(err.value.__cause__.__cause__)
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
    assert local_s3["secret_key"] not in shown and "manifest.json" in ti.pushed["published_url"]
