"""`make demo`'s report (scripts/demo.py): a published run's packs downloaded, checked against the
manifest, and their PNGs extracted into demo-output/grids/, on the test S3 server."""

from __future__ import annotations

import hashlib
import json
import secrets

import pytest

from scripts import demo


@pytest.fixture
def published(local_s3, tmp_path, upstream_onnx, upstream_checkpoint, monkeypatch):
    """A run of 6 grids in 2 shards published to a bucket of its own; demo.py pointed at it."""
    from cgan.publishing.publish import build_metadata, publish_run
    from tests.workspaces import make_workspace

    store, _ = make_workspace(tmp_path / "ws", upstream_onnx, upstream_checkpoint, grids=6, per_shard=3)
    bucket = "demo-report-" + secrets.token_hex(4)
    local_s3["client"].create_bucket(Bucket=bucket)
    metadata = build_metadata(run_id="r", logical_date=None, params={"num_grids": 6}, export=None, convert=None,
                              postprocess={"grids": 6})
    publish_run(store, local_s3["client"], bucket, "runs/r", metadata=metadata, tmp_dir=tmp_path / "t",
                log=lambda m: None)
    monkeypatch.setattr(demo, "BUCKET", bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", local_s3["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", local_s3["secret_key"])
    return bucket


def test_report_extracts_every_grid_of_the_packs(published, local_s3, tmp_path, capsys):
    out = tmp_path / "demo-output"
    assert demo.report(local_s3["endpoint"], out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == 2 and manifest["grids"] == 6
    assert sorted(p.name for p in (out / "packs").iterdir()) == ["pack_00000000.tar", "pack_00000003.tar"]
    expected = {}
    for pack in manifest["packs"]:
        index = json.loads(local_s3["client"].get_object(Bucket=published, Key=pack["index"]["key"])["Body"].read())
        expected.update({name: sha for name, _offset, _size, sha in index["members"]})
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "grids").iterdir()}
    assert got == expected and sorted(got) == [f"grid_{g:08d}.png" for g in range(6)]
    assert (out / "quality" / "quality.json").is_file()
    assert "6 grids in 2 pack(s)" in capsys.readouterr().out


def test_report_refuses_a_pack_that_is_not_the_manifests(published, local_s3, tmp_path):
    client = local_s3["client"]
    manifest_key = json.loads(client.get_object(Bucket=published, Key="latest.json")["Body"].read())["manifest"]
    pack = json.loads(client.get_object(Bucket=published, Key=manifest_key)["Body"].read())["packs"][1]
    body = client.get_object(Bucket=published, Key=pack["key"])["Body"].read()
    damaged = body[:600] + bytes([body[600] ^ 1]) + body[601:]  # one bit of its first PNG: same size
    client.put_object(Bucket=published, Key=pack["key"], Body=damaged)
    with pytest.raises(SystemExit, match="pack_00000003.tar does not match the manifest"):
        demo.report(local_s3["endpoint"], tmp_path / "demo-output")
