"""The sweeps of the publish bucket with faults injected between them and the real S3 server
(tests/faultproxy.py): a bare 404, foreign data under runs/, a store clock that differs from the
worker's, a sweep cut off after its first delete, a retention of 0."""

from __future__ import annotations

import json
import secrets
import time

import boto3
import pytest

from cgan.layout.published import is_own_key
from cgan.publishing.publish import (
    PublishConfigError,
    PublishError,
    remove_expired_runs,
    remove_unpublished_runs,
)
from cgan.storage import s3
from tests.faultproxy import FaultProxy

ATTEMPT = "20261101T020000.000000Z-a1b2c3"
DAY = 86400


def _client(local_s3, endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=local_s3["access_key"], aws_secret_access_key=local_s3["secret_key"])


def _bucket(client) -> str:
    bucket = "sweep-" + secrets.token_hex(3)
    client.create_bucket(Bucket=bucket)
    return bucket


def _staged(client, bucket: str, name: str, packs: int = 2) -> list[str]:
    keys = [f"runs/{name}/attempts/{ATTEMPT}/packs/pack_{i * 1000:08d}.{ext}" for i in range(packs)
            for ext in ("tar", "json")]
    for key in keys:
        s3.put_bytes(client, bucket, key, b"x" * 10)
    return keys


def _keys(client, bucket: str, prefix: str = "") -> set[str]:
    return set(s3.list_keys(client, bucket, prefix))


def test_one_bare_404_for_the_manifest_does_not_make_a_published_run_unpublished(local_s3):
    """Before: the sweep HEADed the manifest once; one bare 404 made it delete the whole run,
    manifest included."""
    direct = local_s3["client"]
    bucket = _bucket(direct)
    keys = _staged(direct, bucket, "published") + ["runs/published/manifest.json"]
    s3.put_bytes(direct, bucket, "runs/published/manifest.json", b"{}")
    lines: list[str] = []
    with FaultProxy(local_s3["endpoint"]) as proxy:
        proxy.add("HEAD", rf"^/{bucket}/runs/published/manifest\.json$", "404")
        removed = remove_unpublished_runs(_client(local_s3, proxy.endpoint), bucket, now=time.time() + 30 * DAY,
                                          retention_days=7, log=lines.append)
        assert ("HEAD", f"/{bucket}/runs/published/manifest.json", "404") in proxy.seen  # the fault fired
    assert removed == {} and _keys(direct, bucket) == set(keys)
    assert any("answered 404 but is listed: the run is published, kept" in line for line in lines)


def test_keys_cgan_did_not_write_are_never_swept(local_s3):
    """Before: everything under runs/<x>/ without a manifest went, another team's data included."""
    client = local_s3["client"]
    bucket = _bucket(client)
    ours = _staged(client, bucket, "failed")
    foreign = ["runs/failed/notes.txt", "runs/failed/attempts/not-an-attempt/packs/pack_00000000.tar",
               f"runs/failed/attempts/{ATTEMPT}/packs/pack_1.tar", "runs/teamx/data/part-0.parquet"]
    for key in foreign:
        s3.put_bytes(client, bucket, key, b"theirs")
    lines: list[str] = []
    removed = remove_unpublished_runs(client, bucket, now=time.time() + 30 * DAY, retention_days=7, log=lines.append)
    assert list(removed) == ["runs/failed"]
    assert _keys(client, bucket) == set(foreign)  # every one of ours gone, none of theirs
    assert not any(is_own_key("runs/failed", k) for k in foreign) and all(is_own_key("runs/failed", k) for k in ours)
    assert any("runs/failed/ holds 3 key(s) cgan did not write" in line for line in lines)


@pytest.mark.parametrize("days", [0, 0.5, -1, float("nan")])
def test_a_retention_under_a_day_is_refused_and_nothing_removed(local_s3, days):
    client = local_s3["client"]
    bucket = _bucket(client)
    keys = _staged(client, bucket, "failed")
    with pytest.raises(PublishConfigError, match="at least 1 day"):
        remove_unpublished_runs(client, bucket, now=time.time() + 30 * DAY, retention_days=days)
    with pytest.raises(PublishConfigError, match="at least 1 day"):
        remove_expired_runs(client, bucket, now=time.time() + 30 * DAY, retention_days=days)
    assert _keys(client, bucket) == set(keys)


def test_the_setting_refuses_a_retention_of_zero(monkeypatch):
    from cgan import settings

    monkeypatch.setenv("CGAN_WORKSPACE_RETENTION_DAYS", "0")
    with pytest.raises(settings.ConfigError, match="CGAN_WORKSPACE_RETENTION_DAYS"):
        settings.workspace_retention_days()


def test_ages_are_on_the_stores_clock(local_s3):
    """The store's clock, not the worker's: a store 3 days ahead makes what was just staged 3
    days old; its own LastModified times and its Date header agree."""
    client = local_s3["client"]
    bucket = _bucket(client)
    assert abs(s3.server_time(client, bucket) - time.time()) < 60
    _staged(client, bucket, "failed")
    with FaultProxy(local_s3["endpoint"], date_offset_s=3 * DAY) as proxy:
        ahead = _client(local_s3, proxy.endpoint)
        now = s3.server_time(ahead, bucket)
        assert now - time.time() > 3 * DAY - 60
        assert remove_unpublished_runs(ahead, bucket, now=now, retention_days=7) == {}
        assert list(remove_unpublished_runs(ahead, bucket, now=now, retention_days=2)) == ["runs/failed"]


def test_a_retention_sweep_cut_off_after_the_manifest_leaves_an_unpublished_prefix_swept_later(local_s3):
    """remove_expired_runs deletes the manifest first: cut off right after (the objects' delete
    fails once), no reader follows a manifest to deleted packs, and what is left is an unpublished
    prefix the next sweep removes."""
    direct = local_s3["client"]
    bucket = _bucket(direct)
    keys = _staged(direct, bucket, "old")
    s3.put_bytes(direct, bucket, "runs/old/manifest.json", json.dumps({"run_id": "old"}).encode())
    later = time.time() + 30 * DAY
    with FaultProxy(local_s3["endpoint"]) as proxy:
        # the manifest's DeleteObjects passes; every later one (botocore's retries too) gets a 500
        proxy.add("POST", rf"^/{bucket}/?\?delete", "500", times=50, after=1)
        with pytest.raises(PublishError):
            remove_expired_runs(_client(local_s3, proxy.endpoint), bucket, now=later, retention_days=7)
    assert _keys(direct, bucket) == set(keys)  # the manifest went first; the packs are left
    assert list(remove_unpublished_runs(direct, bucket, now=later, retention_days=7)) == ["runs/old"]
    assert _keys(direct, bucket) == set()
