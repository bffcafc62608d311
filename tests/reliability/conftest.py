"""Fixtures of the reliability tests: an S3 server of one's own (to kill), workspaces as the
tasks leave them, and the pieces to run the real DAG with `airflow dags test`."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.standins.fixtures import *  # noqa: F401,F403  (stand-in atc/msame fixtures)
from tests.workspaces import make_workspace


@pytest.fixture
def own_s3(tmp_path, monkeypatch):
    """A SeaweedFS server of this test alone, on a fixed port, that the test may kill and restart
    on the same data dir and port. Yields a controller."""

    keys = {"AWS_ACCESS_KEY_ID": "rel-" + secrets.token_hex(4), "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16)}
    for k, v in keys.items():
        monkeypatch.setenv(k, v)
    control = OwnS3(tmp_path / "s3data", fixed_port_block(), keys)
    control.start()
    yield control
    control.stop()


def fixed_port_block() -> int:
    """An S3 port p such that the ports `start(dir, p)` derives from it (and their gRPC ports) are free."""
    from scripts.local_s3 import GRPC_OFFSET, port_free

    first = 21000 + (os.getpid() % 400) * 17
    for p in list(range(first, 29000, 13)) + list(range(21000, first, 13)):
        ports = [p, p + 1000, p + 1001, p + 1002, p + 1007]
        if all(port_free(x) and port_free(x + GRPC_OFFSET) for x in ports):
            return p
    raise RuntimeError("no free port block for a local S3 server")


class OwnS3:
    def __init__(self, data_dir: Path, port: int, keys: dict):
        self.data_dir, self.port, self.keys = data_dir, port, keys
        self.endpoint = f"http://127.0.0.1:{port}"
        self.server = None

    @property
    def access_key(self) -> str:
        return self.keys["AWS_ACCESS_KEY_ID"]

    @property
    def secret_key(self) -> str:
        return self.keys["AWS_SECRET_ACCESS_KEY"]

    def start(self) -> None:
        from scripts import local_s3 as server

        self.server = server.start(self.data_dir, self.port)

    def kill(self) -> None:
        """SIGKILL the whole server (its process group): no clean shutdown, like a lost machine."""
        try:
            os.killpg(self.server.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.server.process.wait(timeout=30)

    def stop(self) -> None:
        if self.server is not None and self.server.process.poll() is None:
            self.server.stop()

    def client(self, secret: str | None = None, **config):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=secret or self.secret_key,
                            config=Config(s3={"addressing_style": "path"}, **config))


@pytest.fixture
def finished_workspace(tmp_path, upstream_onnx, upstream_checkpoint):
    """A file:// workspace as postprocess leaves it (packs, perf, quality) for 6 grids in 2 shards,
    and its shard plan."""
    return make_workspace(tmp_path / "ws", upstream_onnx, upstream_checkpoint, grids=6, per_shard=3)


def metadata(logical_date: str | None, run_id: str = "r") -> dict:
    from cgan.publishing.publish import build_metadata

    return build_metadata(run_id=run_id, logical_date=logical_date, params={"num_grids": 6},
                          export={"onnx_sha256": "ab", "checkpoint_sha256": "cd"}, convert=None,
                          postprocess={"grids": 6})


def listing(client, bucket: str, prefix: str = "") -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def get(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def check_manifest_complete(client, bucket: str, manifest_key: str) -> dict:
    """The manifest exists (layout v2), every object it lists is stored with its size and sha256,
    its packs hold grids 0..N-1 and each pack and index is stored with its size and sha256, every
    grid's PNG in its pack matching the index; and the run prefix holds nothing else but, after a
    re-publish, the objects of the one attempt it replaced."""
    manifest = json.loads(get(client, bucket, manifest_key))
    prefix = manifest_key.rsplit("/", 1)[0]
    for obj in manifest["objects"]:
        body = get(client, bucket, obj["key"])
        assert len(body) == obj["size"], obj["key"]
        assert sha256(body) == obj["sha256"], obj["key"]
    named = {o["key"] for o in manifest["objects"]} | check_packs_stored(client, bucket, manifest)
    listed = set(listing(client, bucket, prefix + "/"))
    others = sorted(listed - named - {manifest_key})
    assert len({k.split("/attempts/", 1)[-1].split("/")[0] for k in others}) <= 1, others
    root = manifest.get("root")
    assert all(k.startswith(prefix + "/attempts/") and not k.startswith(f"{root}/") for k in others), others
    return manifest


def check_packs_stored(client, bucket: str, manifest: dict) -> set[str]:
    """The manifest's packs cover its grids (tests.published_packs.check_v2_manifest), each pack and
    index is stored with its manifest size and sha256, and each grid's PNG, at the offset its index
    gives (what a ranged GET reads), matches the index; the keys of the packs and their indexes."""
    from cgan.layout.packs import PackIndex, check_member
    from tests.published_packs import check_v2_manifest

    keys = set()
    for pack in check_v2_manifest(manifest, manifest["grids"]):
        body, index_body = get(client, bucket, pack["key"]), get(client, bucket, pack["index"]["key"])
        assert len(body) == pack["size"] and sha256(body) == pack["sha256"], pack["key"]
        assert len(index_body) == pack["index"]["size"] and sha256(index_body) == pack["index"]["sha256"], pack
        index = PackIndex.from_json(index_body, first=pack["first"], count=pack["count"])
        assert index.size == pack["size"] and index.sha256 == pack["sha256"], pack["key"]
        for grid in range(pack["first"], pack["first"] + pack["count"]):
            member = index.member(grid)
            check_member(index, grid, body[member.offset:member.offset + member.size])
        keys |= {pack["key"], pack["index"]["key"]}
    return keys


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --- the real DAG -------------------------------------------------------------------------


def latest_run_tasks(airflow_home: Path) -> dict[str, list[tuple[str, int]]]:
    """{task_id: [(state, try_number) per map index]} of the newest cgan_generation run."""
    db = sqlite3.connect(airflow_home / "airflow.db")
    try:
        (run_id,) = db.execute("select run_id from dag_run where dag_id='cgan_generation' "
                               "order by id desc limit 1").fetchone()
        rows = db.execute("select task_id, map_index, state, try_number from task_instance "
                          "where dag_id='cgan_generation' and run_id=? order by task_id, map_index",
                          (run_id,)).fetchall()
    finally:
        db.close()
    tasks: dict[str, list[tuple[str, int]]] = {}
    for task_id, _, state, tries in rows:
        tasks.setdefault(task_id, []).append((state, tries))
    return tasks


def xcom_values(airflow_home: Path) -> str:
    """Every XCom value stored in the metadata DB, as one text."""
    db = sqlite3.connect(airflow_home / "airflow.db")
    try:
        return "\n".join(str(v) for (v,) in db.execute("select value from xcom"))
    finally:
        db.close()


def task_log_files(airflow_home: Path) -> str:
    logs = Path(airflow_home) / "logs"
    return "\n".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()) if logs.is_dir() else ""
