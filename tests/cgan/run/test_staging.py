"""cgan.run.staging: a shard try's grids packed as they come and uploaded while the next pack fills,
into the workspace or staged in the publish bucket (a real S3-compatible server, SeaweedFS)."""

import hashlib
import json
import os
import random
import secrets
import threading

import pytest

from cgan.errors import InferenceError
from cgan.layout.packs import PackIndex, read_members
from cgan.run.staging import MAX_PACKS_IN_FLIGHT, BucketPacks, ShardPacker, WorkspacePacks, check_packs
from cgan.storage.store import open_store


def _png(grid: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + hashlib.sha256(str(grid).encode()).digest() * (1 + grid % 5)


def _members(path) -> list[tuple[str, bytes]]:
    return list(read_members(path))


def test_a_shard_is_packed_in_grid_order_whatever_order_the_grids_come_in(tmp_path):
    store = open_store((tmp_path / "ws").as_uri())
    packer = ShardPacker(WorkspacePacks(store), 10, 7, tmp_path / "work", pack_grids=3)
    assert packer.ranges == [range(10, 13), range(13, 15), range(15, 17)]
    order = list(range(10, 17))
    random.Random(4).shuffle(order)
    for grid in order:
        packer.put(grid, _png(grid))
    entry = packer.finish()
    assert entry["version"] == 2 and entry["bucket"] is None and entry["root"] is None
    assert [(p["first"], p["count"]) for p in entry["packs"]] == [(10, 3), (13, 2), (15, 2)]
    assert check_packs(entry, 10, 7) is None
    assert store.list("packs") == sorted(f"packs/pack_000000{f}.{ext}" for f in (10, 13, 15) for ext in ("json", "tar"))
    for pack in entry["packs"]:
        raw = store.get_bytes(pack["key"])
        assert (len(raw), hashlib.sha256(raw).hexdigest()) == (pack["size"], pack["sha256"])
        body = store.get_bytes(pack["index"]["key"])
        assert (len(body), hashlib.sha256(body).hexdigest()) == (pack["index"]["size"], pack["index"]["sha256"])
        index = PackIndex.from_json(body, first=pack["first"], count=pack["count"])
        assert index.sha256 == pack["sha256"]
        grids = range(pack["first"], pack["first"] + pack["count"])
        assert _members(store.path(pack["key"])) == [(f"grid_{g:08d}.png", _png(g)) for g in grids]
    assert os.listdir(tmp_path / "work") == []  # each pack's file went once it was uploaded
    assert packer.cpu_s["pack"] > 0 and packer.cpu_s["upload"] >= 0


class BlockingSink:
    """A sink whose uploads wait for `release`; it records which packs it was handed."""

    def __init__(self, fail: Exception | None = None):
        self.release, self.started, self.firsts, self.fail = threading.Event(), threading.Event(), [], fail

    def where(self) -> str:
        return "the blocking sink"

    def put(self, path, index: PackIndex) -> dict:
        self.started.set()
        self.release.wait(10)
        if self.fail is not None:
            raise self.fail
        self.firsts.append(index.first)
        return {"key": f"packs/pack_{index.first:08d}.tar", "first": index.first, "count": index.count}

    def record(self) -> dict:
        return {"bucket": None, "root": None}


def test_a_whole_pack_uploads_while_the_next_fills_and_at_most_two_wait(tmp_path):
    assert MAX_PACKS_IN_FLIGHT == 2
    sink = BlockingSink()
    packer = ShardPacker(sink, 0, 8, tmp_path, pack_grids=2)
    for grid in (1, 0):  # pack 0 is whole: handed to the upload thread at once
        packer.put(grid, _png(grid))
    assert sink.started.wait(5)
    for grid in (2, 3):  # pack 2 waits behind it: two in flight
        packer.put(grid, _png(grid))
    packer.put(4, _png(4))
    blocked = threading.Thread(target=packer.put, args=(5, _png(5)))  # completes a third: waits for a slot
    blocked.start()
    blocked.join(0.5)
    assert blocked.is_alive() and sink.firsts == []
    sink.release.set()
    blocked.join(10)
    assert not blocked.is_alive()
    for grid in (6, 7):
        packer.put(grid, _png(grid))
    assert [p["first"] for p in packer.finish()["packs"]] == [0, 2, 4, 6] == sink.firsts


def test_a_failed_upload_fails_the_shard(tmp_path):
    sink = BlockingSink(fail=OSError("bucket full"))
    sink.release.set()
    packer = ShardPacker(sink, 0, 4, tmp_path, pack_grids=2)
    packer.put(0, _png(0))
    packer.put(1, _png(1))
    with pytest.raises(InferenceError, match="uploading a pack to the blocking sink failed: bucket full"):
        for grid in (2, 3):
            packer._pool.submit(lambda: None).result()  # the failed upload is done before the next put
            packer.put(grid, _png(grid))
        packer.finish()
    packer.close()
    assert os.listdir(tmp_path) == []


def test_an_incomplete_shard_is_refused_and_its_partial_pack_removed(tmp_path):
    store = open_store((tmp_path / "ws").as_uri())
    packer = ShardPacker(WorkspacePacks(store), 0, 5, tmp_path / "work", pack_grids=3)
    for grid in (0, 1, 2, 4):
        packer.put(grid, _png(grid))
    with pytest.raises(InferenceError, match=r"1 pack\(s\) of the shard are incomplete \(first: grids 3..4\)"):
        packer.finish()
    packer._pool.shutdown(wait=True)  # the whole pack 0..2 may still be uploading
    assert os.listdir(tmp_path / "work") == []
    with pytest.raises(InferenceError, match="grid 5 is not a grid of this shard"):
        ShardPacker(WorkspacePacks(store), 0, 5, tmp_path / "w2").put(5, _png(5))


def test_close_drops_the_packs_still_waiting_for_upload(tmp_path):
    sink = BlockingSink()
    packer = ShardPacker(sink, 0, 6, tmp_path, pack_grids=2)
    for grid in range(4):  # pack 0 uploading (blocked), pack 2 queued
        packer.put(grid, _png(grid))
    packer.put(4, _png(4))  # pack 4 half written
    assert sink.started.wait(5)
    packer.close()
    sink.release.set()
    packer._pool.shutdown(wait=True)
    assert sink.firsts == [0]  # the one in flight finished; the queued pack was never uploaded
    assert os.listdir(tmp_path) == []  # neither the queued pack nor the half-written one is left
    assert packer._slots.acquire(timeout=1) and packer._slots.acquire(timeout=1)  # both slots free again


@pytest.fixture
def bucket(local_s3):
    client = local_s3["client"]
    name = f"packs-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    return client, name


def _body(client, bucket, key) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_bucket_packs_are_staged_under_a_fresh_attempt_of_the_run(bucket, tmp_path):
    client, name = bucket
    sink = BucketPacks(client, name, "runs/r1")
    assert sink.root.startswith("runs/r1/attempts/") and sink.where() == f"s3://{name}/{sink.root}/"
    assert BucketPacks(client, name, "runs/r1").root != sink.root  # every try its own attempt
    packer = ShardPacker(sink, 3, 5, tmp_path, pack_grids=3)
    for grid in (7, 3, 5, 4, 6):
        packer.put(grid, _png(grid))
    entry = packer.finish()
    assert entry["bucket"] == name and entry["root"] == sink.root and sink.record() == {
        "bucket": name, "root": sink.root}
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"])
    assert keys == sorted(f"{sink.root}/packs/pack_0000000{f}.{ext}" for f in (3, 6) for ext in ("json", "tar"))
    for pack in entry["packs"]:
        raw = _body(client, name, pack["key"])
        assert (len(raw), hashlib.sha256(raw).hexdigest()) == (pack["size"], pack["sha256"])
        (tmp_path / "p.tar").write_bytes(raw)
        grids = range(pack["first"], pack["first"] + pack["count"])
        assert _members(tmp_path / "p.tar") == [(f"grid_{g:08d}.png", _png(g)) for g in grids]
        body = _body(client, name, pack["index"]["key"])
        assert hashlib.sha256(body).hexdigest() == pack["index"]["sha256"]
        assert PackIndex.from_json(body, first=pack["first"]).size == len(raw)
    assert check_packs(entry, 3, 5, "runs/r1") is None
    assert "not under an attempt of runs/r2" in check_packs(entry, 3, 5, "runs/r2")
    assert check_packs(entry, 3, 6, "runs/r1") == "the packs cover grids 3..7, the shard is 3..8"


def test_a_pack_past_the_multipart_threshold_is_staged_whole(bucket, tmp_path):
    """9 MiB: boto3's multipart upload on the upload thread, then its size checked by a HEAD."""
    client, name = bucket
    sink = BucketPacks(client, name, "runs/big")
    packer = ShardPacker(sink, 0, 9, tmp_path)
    blobs = {g: b"\x89PNG" + os.urandom(1 << 20) for g in range(9)}
    for grid in reversed(range(9)):
        packer.put(grid, blobs[grid])
    (pack,) = packer.finish()["packs"]
    assert pack["size"] > 9 << 20
    head = client.head_object(Bucket=name, Key=pack["key"])
    assert head["ContentLength"] == pack["size"]
    raw = _body(client, name, pack["key"])
    assert hashlib.sha256(raw).hexdigest() == pack["sha256"]
    index = PackIndex.from_json(_body(client, name, pack["index"]["key"]))
    for grid in (0, 4, 8):  # one ranged GET per grid, as the gallery reads it
        m = index.member(grid)
        got = client.get_object(Bucket=name, Key=pack["key"], Range=f"bytes={m.offset}-{m.offset + m.size - 1}")
        assert got["Body"].read() == blobs[grid]


def _entry(root=None, bucket=None):
    base = f"{root}/" if root else ""

    def pack(first, count):
        return {"key": f"{base}packs/pack_{first:08d}.tar", "size": 10240, "sha256": "a" * 64, "first": first,
                "count": count, "index": {"key": f"{base}packs/pack_{first:08d}.json", "size": 300,
                                          "sha256": "b" * 64}}

    return {"version": 2, "bucket": bucket, "root": root, "packs": [pack(0, 3), pack(3, 2)]}


@pytest.mark.parametrize("damage, reason", [
    (lambda e: e.update(version=1), "unknown packs entry"),
    (lambda e: e.update(packs=[]), "no packs listed"),
    (lambda e: e["packs"].pop(0), "the packs do not cover grid 0"),
    (lambda e: e["packs"].pop(), "the packs cover grids 0..2, the shard is 0..4"),
    (lambda e: e["packs"][1].update(first=2), "the packs do not cover grid 3"),
    (lambda e: e["packs"][0].update(count=4), "the packs do not cover grid 4"),
    (lambda e: e["packs"][0].update(count=True), "bad pack entry"),
    (lambda e: e["packs"][0].update(sha256="a"), "bad pack entry"),
    (lambda e: e["packs"][1]["index"].pop("size"), "bad pack entry"),
    (lambda e: e["packs"][1].update(key="quality/quality.json"), "pack 'quality/quality.json' of grid 3 is not"),
    (lambda e: e["packs"][1]["index"].update(key="packs/pack_00000000.json"), "of grid 3 is not"),
    (lambda e: e.update(root="runs/r1/attempts/a"), "packs in the workspace with a root"),
])
def test_check_packs_says_why_workspace_packs_do_not_cover_a_shard(damage, reason):
    entry = _entry()
    assert check_packs(entry, 0, 5) is None
    damage(entry)
    assert reason in check_packs(entry, 0, 5)


def test_check_packs_of_staged_packs_wants_them_under_an_attempt_of_the_run():
    entry = _entry("runs/r1/attempts/20261126T020000.000000Z-abcdef", "b")
    assert check_packs(entry, 0, 5, "runs/r1") is None and check_packs(entry, 0, 5) is None
    assert "not under an attempt of runs/r2" in check_packs(entry, 0, 5, "runs/r2")
    elsewhere = json.loads(json.dumps(entry).replace("attempts/20261126T020000.000000Z-abcdef/", "other/"))
    assert "is not runs/r1/attempts/" in check_packs(elsewhere, 0, 5)  # keys outside the attempt it names
    assert "packs staged under None" in check_packs(dict(entry, root=None), 0, 5)
