"""A worker whose clock is more than 15 minutes off the store's: S3 refuses what it signs with a 403
(RequestTimeTooSkewed; a bare 403 to a HEAD, which has no body). cgan names it clock skew, with the
two clocks and the fix (sync the worker's clock), never "wrong credentials", and keeps the task's
retries (another worker, or this one once NTP has set it right, succeeds)."""

from __future__ import annotations

import datetime
import time
from email.utils import formatdate

import boto3
import pytest
from botocore.exceptions import ClientError

from cgan.storage import s3
from tests.faultproxy import FaultProxy

AHEAD_S = 20 * 60  # the store's clock 20 minutes ahead of the worker's
TOO_SKEWED = "The difference between the request time and the current time is too large."  # AWS's Message


def skewed(code: str, operation: str = "GetObject", date_offset_s: float | None = None,
           **fields: str) -> ClientError:
    headers = {} if date_offset_s is None else {"date": formatdate(time.time() + date_offset_s, usegmt=True)}
    message = "Forbidden" if code == "403" else TOO_SKEWED
    return ClientError({"Error": {"Code": code, "Message": message, **fields},
                        "ResponseMetadata": {"HTTPStatusCode": 403, "HTTPHeaders": headers}}, operation)


def aws_fields(offset_s: float) -> dict[str, str]:
    """RequestTime (the request's X-Amz-Date) and ServerTime as AWS S3 words them."""
    signed = datetime.datetime.now(datetime.UTC)
    return {"RequestTime": signed.strftime("%Y%m%dT%H%M%SZ"),
            "ServerTime": (signed + datetime.timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "MaxAllowedSkewMilliseconds": "900000"}


def assert_names_clock_skew(error: BaseException, behind: bool = True) -> None:
    text = str(error)
    assert "credential" not in text.lower() and "access refused" not in text, text
    assert "clock skew" in text and "Sync the worker's clock" in text and "chrony" in text, text
    assert ("20 min" in text or "19 min 59 s" in text) and ("behind" if behind else "ahead of") in text, text
    assert isinstance(error, s3.S3ClockSkew), f"{type(error).__name__}: {text}"
    assert error.kind == s3.CLOCK_SKEW and error.retryable  # a retry may run on a worker whose clock is right
    assert not s3.is_config_error(error)


# Each answer is made when its test runs, not when pytest collects the module: a Date header set
# 20 minutes ahead at collection is only 13 minutes ahead in a suite that reaches it 7 minutes later.
@pytest.mark.parametrize("make,behind", [
    (lambda: skewed("RequestTimeTooSkewed", **aws_fields(AHEAD_S)), True),  # AWS: RequestTime and ServerTime
    (lambda: skewed("RequestTimeTooSkewed", **aws_fields(-AHEAD_S)), False),  # the worker's clock ahead
    (lambda: skewed("RequestTimeTooSkewed", date_offset_s=AHEAD_S, Resource="/b/k"), True),  # SeaweedFS: the Date
    (lambda: skewed("403", "HeadObject", date_offset_s=AHEAD_S), True),  # a HEAD: no body, the Date shows it
    (lambda: skewed("403", "HeadBucket", date_offset_s=-AHEAD_S), False),
], ids=["aws-body", "aws-body-worker-ahead", "seaweedfs-body", "bare-403-head", "bare-403-worker-ahead"])
def test_request_time_too_skewed_is_clock_skew_not_credentials(make, behind):
    exc = make()
    error = s3.wrap(exc, "cannot read s3://b/k")
    assert str(error).startswith("cannot read s3://b/k (")
    assert_names_clock_skew(error, behind)
    assert s3.classify(exc) == s3.CLOCK_SKEW
    if "ServerTime" in exc.response["Error"]:  # the server's own account of both clocks
        assert exc.response["Error"]["ServerTime"] in str(error) and exc.response["Error"]["RequestTime"] in str(error)
    else:  # the store's Date header against this worker's clock
        assert exc.response["ResponseMetadata"]["HTTPHeaders"]["date"] in str(error)


@pytest.mark.parametrize("make", [
    lambda: skewed("403", "HeadObject"),  # no Date header: nothing says the clocks differ
    lambda: skewed("403", "HeadObject", date_offset_s=2),  # the clocks agree: the 403 is the credentials' or rights'
    lambda: skewed("403", "HeadObject", date_offset_s=10 * 60),  # 10 minutes off is within S3's 15
], ids=["no-date", "clocks-agree", "10-min-off"])
def test_a_bare_403_with_clocks_that_agree_is_still_configuration(make):
    exc = make()
    assert s3.classify(exc) == s3.CONFIGURATION
    assert isinstance(s3.wrap(exc, "x"), s3.S3ConfigError)


def test_clock_skew_through_a_proxy_in_front_of_the_real_server(local_s3, tmp_path):
    """The proxy answers as a store whose clock is 20 minutes ahead: a bare 403 (with its Date) to
    HeadBucket, a 403 RequestTimeTooSkewed with AWS's body to GET and PUT."""
    from cgan.publishing.publish import PublishConfigError, PublishError, publish_run

    local_s3["client"].create_bucket(Bucket="skew")
    s3.put_bytes(local_s3["client"], "skew", "k", b"data")
    with FaultProxy(local_s3["endpoint"], date_offset_s=AHEAD_S) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.endpoint, region_name="us-east-1",
                              aws_access_key_id=local_s3["access_key"], aws_secret_access_key=local_s3["secret_key"])
        proxy.add("HEAD", r"^/skew/?$", "skew", times=2)
        proxy.add("GET", r"^/skew/k$", "skew")
        proxy.add("PUT", r"^/skew/k$", "skew")
        with pytest.raises(s3.S3Error) as head:
            s3.check_bucket(client, "skew")
        with pytest.raises(s3.S3Error) as read:
            s3.get_bytes(client, "skew", "k")
        with pytest.raises(s3.S3Error) as write:
            s3.put_bytes(client, "skew", "k", b"new")
        with pytest.raises(PublishError) as publish:  # publish checks the bucket first
            publish_run(None, client, "skew", "runs/r", metadata={}, tmp_dir=tmp_path, log=lambda m: None)
        assert [a for _, _, a in proxy.seen] == ["skew"] * 4
        assert s3.get_bytes(client, "skew", "k")[0] == b"data"  # the rules spent: the store serves again
    assert_names_clock_skew(head.value)
    assert str(head.value).startswith(f"cannot use bucket s3://skew/ at {proxy.endpoint} (403: Forbidden): ")
    assert_names_clock_skew(read.value)
    assert "RequestTimeTooSkewed" in str(read.value) and "the store's clock said" in str(read.value)
    assert_names_clock_skew(write.value)
    assert s3.get_bytes(local_s3["client"], "skew", "k")[0] == b"data"  # the refused PUT wrote nothing
    assert not isinstance(publish.value, PublishConfigError) and publish.value.retryable  # keeps its retries
    assert "clock skew" in str(publish.value) and "credential" not in str(publish.value).lower()


def test_a_worker_clock_20_minutes_behind_is_named_by_the_real_server(local_s3, monkeypatch):
    """No proxy: the client signs 20 minutes in the past, and this worker's clock says the same.
    SeaweedFS answers RequestTimeTooSkewed to GET and PUT and a bare 403 to HEAD."""
    import botocore.auth

    local_s3["client"].create_bucket(Bucket="skew-real")
    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda *a, **k: real(*a, **k) - datetime.timedelta(seconds=AHEAD_S))
    monkeypatch.setattr(s3, "local_clock", lambda: time.time() - AHEAD_S, raising=False)
    for call in (lambda c: s3.check_bucket(c, "skew-real"), lambda c: s3.head(c, "skew-real", "k"),
                 lambda c: s3.get_bytes(c, "skew-real", "k"), lambda c: s3.put_bytes(c, "skew-real", "k", b"x")):
        with pytest.raises(s3.S3Error) as err:
            call(local_s3["client"])
        assert_names_clock_skew(err.value)
