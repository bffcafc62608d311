"""cgan.layout.packs: the grid pack (a ustar tar in grid order) and its index, read back by Python's
tarfile, GNU tar and the webdataset library as consumers do."""

import hashlib
import json
import subprocess
import tarfile

import numpy as np
import pytest

from cgan.layout.packs import (
    PACK_GRIDS,
    TAR_BLOCK,
    PackError,
    PackIndex,
    PackWriter,
    check_member,
    grid_of_member,
    index_key,
    member_name,
    pack_key,
    pack_name,
    pack_ranges,
    read_members,
)
from cgan.recipe.grids import grid_array, png_bytes

FIRST = 40


def _pngs(first: int, count: int) -> dict[int, bytes]:
    """Real grid PNGs of different sizes (random samples, one seed per grid)."""
    out = {}
    for g in range(first, first + count):
        samples = np.random.default_rng(g).uniform(-1, 1, (100, 1, 28, 28)).astype(np.float32)
        samples[: g % 7 * 10] = 0  # different sizes: not every member ends on the same boundary
        out[g] = png_bytes(grid_array(samples))
    return out


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """(path, index, pngs) of a pack of grids 40..44 written in the order 43, 40, 44, 42, 41."""
    pngs = _pngs(FIRST, 5)
    path = tmp_path_factory.mktemp("pack") / pack_name(FIRST)
    writer = PackWriter(path, FIRST, 5)
    done = [writer.add(g, pngs[g]) for g in (43, 40, 44, 42, 41)]
    assert done == [False, False, False, False, True]
    return path, writer.finish(), pngs


def test_out_of_order_pngs_become_members_in_grid_order(pack):
    path, index, pngs = pack
    assert list(read_members(path)) == [(member_name(g), pngs[g]) for g in range(FIRST, FIRST + 5)]
    with tarfile.open(path) as tar:
        infos = tar.getmembers()
        assert [i.name for i in infos] == [f"grid_{g:08d}.png" for g in range(FIRST, FIRST + 5)]
        assert all(i.isfile() and i.mode == 0o644 and (i.uid, i.gid) == (0, 0) for i in infos)
    assert index.first == FIRST and index.count == 5 and [m.name for m in index.members] == [
        i.name for i in infos]


def test_the_index_offsets_sizes_and_sha256_match_the_bytes(pack):
    path, index, pngs = pack
    raw = path.read_bytes()
    assert index.size == len(raw) and index.sha256 == hashlib.sha256(raw).hexdigest()
    assert len(raw) % TAR_BLOCK == 0
    for g, member in zip(range(FIRST, FIRST + 5), index.members, strict=True):
        data = raw[member.offset: member.offset + member.size]
        assert data == pngs[g] and member.size == len(pngs[g])
        assert member.sha256 == hashlib.sha256(data).hexdigest()
        assert check_member(index, g, data) == data  # one ranged GET, checked
    assert len({m.size for m in index.members}) > 1  # the offsets were not all one stride
    damaged = bytearray(pngs[42])
    damaged[-1] ^= 1
    with pytest.raises(PackError, match="grid_00000042.png of pack_00000040.tar does not match its index"):
        check_member(index, 42, bytes(damaged))
    with pytest.raises(PackError, match="does not match"):
        check_member(index, 42, pngs[41])
    with pytest.raises(PackError, match="grid 45 is not in the pack of grids 40..44"):
        index.member(45)


def test_gnu_tar_extracts_the_pngs_the_index_names(pack, tmp_path):
    path, index, _ = pack
    listed = subprocess.run(["tar", "-t", "-f", str(path)], check=True, capture_output=True, text=True).stdout
    assert listed.split() == [m.name for m in index.members]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-x", "-f", str(path), "-C", str(out)], check=True, capture_output=True)
    assert sorted(p.name for p in out.iterdir()) == [m.name for m in index.members]
    for member in index.members:
        data = (out / member.name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and hashlib.sha256(data).hexdigest() == member.sha256


def test_webdataset_reads_a_pack_as_samples_keyed_by_grid(pack):
    import webdataset as wds

    path, index, pngs = pack
    samples = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"grid_{g:08d}" for g in range(FIRST, FIRST + 5)]
    assert all(set(s) - {"__key__", "__url__", "__local_path__"} == {"png"} for s in samples)
    assert [s["png"] for s in samples] == [pngs[g] for g in range(FIRST, FIRST + 5)]
    # decoded the way a training loop would: 280 x 280 grey images, the grid's pixels
    decoded = next(iter(wds.WebDataset(str(path), shardshuffle=False).decode("l")))
    assert decoded["png"].shape == (280, 280)


def test_index_round_trips_through_json(pack):
    _, index, _ = pack
    body = index.to_json()
    assert PackIndex.from_json(body) == index
    assert PackIndex.from_json(body, first=FIRST, count=5) == index
    doc = json.loads(body)
    assert doc["pack"] == "pack_00000040.tar" and doc["count"] == 5 and len(doc["members"]) == 5


def _edit(body: bytes, change) -> bytes:
    doc = json.loads(body)
    change(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("damage, reason", [
    (lambda b: b[: len(b) // 2], "not a pack index"),
    (lambda b: b"[1, 2]", "not a pack index"),
    (lambda b: b"\x89PNG\r\n\x1a\n", "not a pack index"),
    (lambda b: _edit(b, lambda d: d.update(version=2)), "pack index version 2, this reader knows 1"),
    (lambda b: _edit(b, lambda d: d.pop("members")), "not a pack index"),
    (lambda b: _edit(b, lambda d: d.update(first="40")), "not a pack index"),
    (lambda b: _edit(b, lambda d: d.update(size=True)), "not a pack index"),
    (lambda b: _edit(b, lambda d: d.update(sha256="00")), "not a pack index"),
    (lambda b: _edit(b, lambda d: d.update(count=4)), "not a pack index"),
    (lambda b: _edit(b, lambda d: d.update(pack="pack_00000041.tar")), "not a pack index"),
    (lambda b: _edit(b, lambda d: d.update(members=[])), "not a pack index"),
    (lambda b: _edit(b, lambda d: d["members"][1].__setitem__(0, "grid_00000040.png")), "member 1 .* is not grid 41"),
    (lambda b: _edit(b, lambda d: d["members"][2].__setitem__(1, d["members"][2][1] + 1)), "member 2"),
    (lambda b: _edit(b, lambda d: d["members"][2].__setitem__(1, d["members"][1][1])), "member 2"),
    (lambda b: _edit(b, lambda d: d["members"][4].__setitem__(2, 10**9)), "member 4"),
    (lambda b: _edit(b, lambda d: d["members"][0].__setitem__(2, "9")), "member 0"),
    (lambda b: _edit(b, lambda d: d["members"][3].__setitem__(3, "x" * 64)), "member 3"),
    (lambda b: _edit(b, lambda d: d["members"][3].pop()), "not a pack index"),
], ids=["truncated", "a list", "a png", "version", "no members", "first text", "size bool", "short sha",
        "count", "pack name", "empty", "member name", "offset off block", "overlap", "past the end",
        "size text", "sha not hex", "member short"])
def test_a_damaged_index_is_refused(pack, damage, reason):
    _, index, _ = pack
    with pytest.raises(PackError, match=reason):
        PackIndex.from_json(damage(index.to_json()))


def test_an_index_of_another_pack_is_refused(tmp_path):
    pngs = _pngs(0, 3)
    writer = PackWriter(tmp_path / pack_name(0), 0, 3)
    for g in range(3):
        writer.add(g, pngs[g])
    body = writer.finish().to_json()
    assert PackIndex.from_json(body, first=0, count=3).count == 3
    with pytest.raises(PackError, match=r"the index is of grids 0..2, expected 40..44"):
        PackIndex.from_json(body, first=40, count=5)
    with pytest.raises(PackError, match=r"the index is of grids 0..2, expected 0..1"):
        PackIndex.from_json(body, first=0, count=2)


def test_the_writer_refuses_foreign_repeated_and_missing_grids(tmp_path):
    path = tmp_path / "p.tar"
    writer = PackWriter(path, 10, 3)
    writer.add(11, b"\x89PNG b")
    for grid in (9, 13, 11):
        with pytest.raises(PackError, match=f"grid {grid} is not a missing grid of the pack pack_00000010.tar"):
            writer.add(grid, b"\x89PNG x")
    writer.add(10, b"\x89PNG a")
    with pytest.raises(PackError, match="grid 10 is not a missing grid"):  # already written
        writer.add(10, b"\x89PNG a")
    with pytest.raises(PackError, match=r"pack_00000010.tar: 1 grid\(s\) missing"):
        writer.finish()
    writer.abort()
    assert not path.exists()


def test_pack_ranges_split_a_shard_evenly():
    assert pack_ranges(0, 2500) == [range(0, 834), range(834, 1667), range(1667, 2500)]
    assert pack_ranges(7, PACK_GRIDS) == [range(7, 7 + PACK_GRIDS)]
    assert pack_ranges(0, PACK_GRIDS + 1) == [range(0, 501), range(501, 1001)]
    assert pack_ranges(5, 7, pack_grids=3) == [range(5, 8), range(8, 10), range(10, 12)]
    assert pack_ranges(3, 0) == [] and pack_ranges(3, 1) == [range(3, 4)]
    for start, count in ((0, 1), (12345, 99_999), (0, 10_000), (999, 1001)):
        ranges = pack_ranges(start, count)
        assert [g for r in ranges for g in r] == list(range(start, start + count))  # each grid once, in order
        sizes = [len(r) for r in ranges]
        assert max(sizes) <= PACK_GRIDS and max(sizes) - min(sizes) <= 1
        assert len(ranges) == -(-count // PACK_GRIDS)


def test_keys_and_member_names():
    assert pack_key(42000) == "packs/pack_00042000.tar" and index_key(42000) == "packs/pack_00042000.json"
    assert member_name(7) == "grid_00000007.png" and grid_of_member("grid_00000007.png") == 7
    for name in ("grid_00000007.json", "pack_00000007.png", "grid_abc.png", "grid_.png", "x"):
        assert grid_of_member(name) is None
