"""The retention of published runs (CGAN_PUBLISHED_RETENTION_DAYS): old runs go, manifest first;
the run latest.json names, the current run and unpublished prefixes stay."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from cgan.publishing.publish import PublishError, remove_expired_runs
from cgan.storage import s3


def _bucket(client) -> str:
    bucket = "retention-" + secrets.token_hex(3)
    client.create_bucket(Bucket=bucket)
    return bucket


ATTEMPT = "20261101T020000.000000Z-a1b2c3"


def _run(client, bucket: str, name: str, objects: int = 3) -> None:
    for i in range(objects):
        s3.put_bytes(client, bucket, f"runs/{name}/attempts/{ATTEMPT}/packs/pack_{i:08d}.tar", b"x" * 10)
    s3.put_bytes(client, bucket, f"runs/{name}/manifest.json", b"{}")


def _keys(client, bucket: str) -> set[str]:
    return set(s3.list_keys(client, bucket, ""))


def test_old_published_runs_are_removed_but_not_the_latest_nor_the_current_nor_unpublished(local_s3):
    client = local_s3["client"]
    bucket = _bucket(client)
    for name in ("old", "pinned", "current"):
        _run(client, bucket, name)
    s3.put_bytes(client, bucket, f"runs/staged/attempts/{ATTEMPT}/packs/pack_00000000.tar", b"x")  # no manifest
    s3.put_bytes(client, bucket, "latest.json", json.dumps({"manifest": "runs/pinned/manifest.json"}).encode())
    logs: list[str] = []
    removed = remove_expired_runs(client, bucket, now=time.time() + 10 * 86400, retention_days=7,
                                  keep="runs/current", log=logs.append)
    assert list(removed) == ["runs/old"] and removed["runs/old"] > 9.9
    left = _keys(client, bucket)
    assert not any(k.startswith("runs/old/") for k in left)
    assert {"runs/pinned/manifest.json", "runs/current/manifest.json", "latest.json",
            f"runs/staged/attempts/{ATTEMPT}/packs/pack_00000000.tar"} <= left
    assert "CGAN_PUBLISHED_RETENTION_DAYS=7" in logs[0] and "4 object(s)" in logs[0]


def test_young_runs_stay(local_s3):
    client = local_s3["client"]
    bucket = _bucket(client)
    _run(client, bucket, "young")
    assert remove_expired_runs(client, bucket, now=time.time() + 86400, retention_days=7) == {}
    assert "runs/young/manifest.json" in _keys(client, bucket)


def test_an_unreadable_latest_json_removes_nothing(local_s3):
    client = local_s3["client"]
    bucket = _bucket(client)
    _run(client, bucket, "old")
    s3.put_bytes(client, bucket, "latest.json", b"not json")
    with pytest.raises(PublishError, match="no published run was removed"):
        remove_expired_runs(client, bucket, now=time.time() + 100 * 86400, retention_days=7)
    assert "runs/old/manifest.json" in _keys(client, bucket)


def test_the_setting_is_off_by_default_and_checked(monkeypatch):
    from cgan import settings

    monkeypatch.delenv("CGAN_PUBLISHED_RETENTION_DAYS", raising=False)
    assert settings.published_retention_days() is None
    monkeypatch.setenv("CGAN_PUBLISHED_RETENTION_DAYS", "30")
    assert settings.published_retention_days() == 30
    monkeypatch.setenv("CGAN_PUBLISHED_RETENTION_DAYS", "0")
    with pytest.raises(settings.ConfigError, match="CGAN_PUBLISHED_RETENTION_DAYS"):
        settings.published_retention_days()
