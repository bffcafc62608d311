"""A shard's input bins from the workspace: the per-shard pack input_bins writes."""

import pytest

from cgan.errors import InputBinError
from cgan.recipe.bins import split_bins_pack, write_bins, write_bins_pack
from cgan.run.shard import Shard, ShardError
from cgan.run.shard_inputs import fetch_input_bin, fetch_shard_bins
from cgan.storage.keys import StoreError
from cgan.storage.store import LocalStore, open_store

SHARD = Shard(index=1, start=5, count=4)


@pytest.fixture
def expected(tmp_path):
    folder = tmp_path / "expected"
    write_bins(folder, 4, 7, start=5)
    return {p.name: p.read_bytes() for p in folder.glob("*.bin")}


def _packed(store, tmp_path):
    store.put_file(write_bins_pack(tmp_path / "p", 4, 7, start=5), "bins/shard_0001/inputs.pack")


def test_a_shard_reads_back_as_the_same_bins(tmp_path, expected):
    store = LocalStore(tmp_path / "ws")
    _packed(store, tmp_path)
    got = fetch_shard_bins(store, SHARD, tmp_path / "work" / "bins")
    assert {p.name: p.read_bytes() for p in got} == expected
    assert [p.name for p in got] == sorted(expected)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["bins"]  # the pack copy is gone
    one = fetch_input_bin(store, SHARD, 7, tmp_path / "one" / "grid_00000007.bin")
    assert one.read_bytes() == expected["grid_00000007.bin"]


def test_pack_on_s3_is_one_object_read_whole_or_by_range(tmp_path, local_s3, expected):
    local_s3["client"].create_bucket(Bucket="shard-inputs")
    store = open_store("s3://shard-inputs/ws", s3_client=local_s3["client"])
    _packed(store, tmp_path)
    assert store.list("bins") == ["bins/shard_0001/inputs.pack"]
    got = fetch_shard_bins(store, SHARD, tmp_path / "bins")
    assert {p.name: p.read_bytes() for p in got} == expected
    assert fetch_input_bin(store, SHARD, 8, tmp_path / "g8.bin").read_bytes() == expected["grid_00000008.bin"]
    with pytest.raises(StoreError, match="too short"):
        store.get_range("bins/shard_0001/inputs.pack", 3 * 28_800 + 1, 28_800)


def test_bad_packs_and_missing_bins_name_the_problem(tmp_path):
    store = LocalStore(tmp_path / "ws")
    with pytest.raises(InputBinError, match="no input bins under bins/shard_0001/.*re-run input_bins"):
        fetch_shard_bins(store, SHARD, tmp_path / "a")
    store.put_bytes(b"\0" * 28_800 * 3, "bins/shard_0001/inputs.pack")  # one grid short
    with pytest.raises(InputBinError, match="86400 bytes, not the 4 x 28800 of grids 5..8: re-run input_bins"):
        fetch_shard_bins(store, SHARD, tmp_path / "b")
    with pytest.raises(ShardError, match="a shard is a dict of the plan's shard fields"):
        Shard.from_xcom({"shard": 1, "bins_prefix": "bins/shard_0001"})  # no start and count: not a plan's
    with pytest.raises(InputBinError, match="grid 9 is not in shard 1"):
        fetch_input_bin(store, SHARD, 9, tmp_path / "d.bin")
    with pytest.raises(StoreError, match="too short"):
        fetch_input_bin(store, SHARD, 8, tmp_path / "e.bin")


def test_pack_is_the_bins_back_to_back_and_splits_into_them(tmp_path, expected):
    pack = write_bins_pack(tmp_path / "inputs.pack", 4, 7, start=5)
    assert pack.read_bytes() == b"".join(expected[k] for k in sorted(expected))
    assert not list(tmp_path.glob(".*part"))
    paths = split_bins_pack(pack, tmp_path / "split", 5, 4)
    assert {p.name: p.read_bytes() for p in paths} == expected
    with pytest.raises(InputBinError, match="num_grids"):
        write_bins_pack(tmp_path / "x.pack", 0, 7)
