"""Grids rendered on the inference worker (cgan.run.shard_render) into the shard's packs, the
shard's hand-over, run_shard around them, and postprocess merging the tallies."""

import json
import threading
from dataclasses import replace

import pytest

from cgan.errors import InferenceError
from cgan.layout.packs import read_members
from cgan.layout.workspace import RENDER_NAME, STAGED_KEY, outputs_prefix, render_key
from cgan.recipe.bins import write_bins
from cgan.recipe.grids import grid_array, png_bytes
from cgan.recipe.outputs import read_output_bin
from cgan.run.inference import run_shard
from cgan.run.plan import plan_shards
from cgan.run.postprocess import postprocess_run
from cgan.run.shard import Shard
from cgan.run.shard_render import ShardRenderer, check_render, hand_over, render_outputs
from cgan.run.staging import ShardPacker, WorkspacePacks
from cgan.runtimes.onnxruntime_runner import run_onnxruntime
from cgan.storage.store import open_store, upload_dir
from tests.workspaces import upload_pack


def _packer(store, tmp_path, start: int, count: int) -> ShardPacker:
    """A shard try's packer into the workspace, as run_shard makes it without a publish bucket."""
    return ShardPacker(WorkspacePacks(store), start, count, tmp_path / f"packs-{start}")


def _grids(store) -> list[tuple[str, bytes]]:
    """(member name, PNG) of every pack in the workspace, in key (= grid) order."""
    return [m for key in store.list("packs") if key.endswith(".tar") for m in read_members(store.path(key))]


def _run_shards(tmp_path, onnx, store, shards, render: bool):
    """As the inference tasks leave a workspace: rendered into packs and handed over, or
    (render=False) every raw output uploaded and no tally."""
    for shard in shards:
        local = tmp_path / shard.bins_prefix
        write_bins(local, shard.count, 9, start=shard.start)
        upload_pack(store, shard, local)
        renderer = ShardRenderer(_packer(store, tmp_path, shard.start, shard.count)) if render else None
        run = run_onnxruntime(onnx, local, tmp_path / f"out{shard.index}",
                              on_output=renderer.submit if renderer else None)
        if renderer:
            hand_over(store, shard, run.output_dir, renderer.finish(), [run.output_dir / "perf.json"])
        else:
            upload_dir(store, run.output_dir, outputs_prefix(shard.index))


@pytest.fixture
def two_workspaces(tmp_path, upstream_onnx, request):
    """The same 5 grids in 2 shards (parity sample: grids 0 and 4), rendered and handed over in
    one workspace, every raw output kept and nothing rendered in the other."""
    keep = getattr(request, "param", False)
    shards = plan_shards(5, "cpu", [0], 3, parity_grids=2, keep_raw_outputs=keep)
    streamed = open_store((tmp_path / "streamed").as_uri())
    plain = open_store((tmp_path / "plain").as_uri())
    _run_shards(tmp_path / "s", upstream_onnx, streamed, shards, render=True)
    _run_shards(tmp_path / "p", upstream_onnx, plain, shards, render=False)
    return streamed, plain, shards


class CountingStore:
    """Passes through to a real store, recording pack writes."""

    def __init__(self, store):
        self.store, self.pack_puts = store, []

    def put_bytes(self, data, key):
        self.pack_puts += [key] if key.startswith("packs/") else []
        return self.store.put_bytes(data, key)

    def put_file(self, local, key):
        self.pack_puts += [key] if key.startswith("packs/") else []
        return self.store.put_file(local, key)

    def __getattr__(self, name):
        return getattr(self.store, name)


PACKS = ["packs/pack_00000000.json", "packs/pack_00000000.tar", "packs/pack_00000003.json",
         "packs/pack_00000003.tar"]


def _shape(staged: dict) -> list:
    """staged.json without the pack bytes' hashes (a pack's tar headers carry its try's time)."""
    return [(s["shard"], s["bucket"], s["root"], [(p["key"], p["first"], p["count"], p["index"]["key"])
                                                 for p in s["packs"]]) for s in staged["shards"]]


def test_rendered_shards_are_merged_not_rendered_again(two_workspaces, upstream_checkpoint):
    streamed, plain, shards = two_workspaces
    assert streamed.list("packs") == PACKS and plain.list("packs") == []  # made during inference
    counting, lines = CountingStore(streamed), []
    postprocess_run(counting, shards, upstream_checkpoint, log=lines.append)
    postprocess_run(plain, shards, upstream_checkpoint, log=lambda m: None)
    assert counting.pack_puts == []
    assert "grids 3/5 (shard 0: 1 pack(s) in the workspace)" in lines
    assert "grids 5/5 (shard 1: 1 pack(s) in the workspace)" in lines
    assert streamed.list("packs") == plain.list("packs") == PACKS
    assert _grids(streamed) == _grids(plain)  # byte-identical PNGs either way, in grid order
    assert [name for name, _ in _grids(plain)] == [f"grid_0000000{i}.png" for i in range(5)]
    staged = json.loads(streamed.get_bytes(STAGED_KEY))
    assert staged["version"] == 2 and _shape(staged) == _shape(json.loads(plain.get_bytes(STAGED_KEY)))
    assert _shape(staged) == [(0, None, None, [(PACKS[1], 0, 3, PACKS[0])]),
                              (1, None, None, [(PACKS[3], 3, 2, PACKS[2])])]
    for shard in staged["shards"]:  # what the inference tasks' render.json said, byte for byte
        assert shard["packs"] == json.loads(streamed.get_bytes(render_key(shard["shard"])))["packs"]["packs"]
    q_streamed = json.loads(streamed.get_bytes("quality/quality.json"))
    q_plain = json.loads(plain.get_bytes("quality/quality.json"))
    assert q_streamed == q_plain  # same counts, same parity samples
    assert q_streamed["grids"] == 5 and q_streamed["parity_grids_checked"] == 2
    assert not any(RENDER_NAME in k for k in streamed.list("perf"))
    # only the parity sample's raw outputs left the workers
    assert [k for k in streamed.list("outputs") if k.endswith(".bin")] == [
        "outputs/shard_0000/grid_00000000_output_0.bin", "outputs/shard_0001/grid_00000004_output_0.bin"]


def test_keep_raw_outputs_hands_over_every_output(tmp_path, upstream_onnx):
    store = open_store((tmp_path / "ws").as_uri())
    shards = plan_shards(3, "cpu", [0], 3, parity_grids=1, keep_raw_outputs=True)
    _run_shards(tmp_path, upstream_onnx, store, shards, render=True)
    assert [k for k in store.list("outputs") if k.endswith(".bin")] == [
        f"outputs/shard_0000/grid_0000000{i}_output_0.bin" for i in range(3)]


def test_hand_over_refuses_a_missing_parity_output_and_writes_no_tally(tmp_path, upstream_onnx):
    store = open_store((tmp_path / "ws").as_uri())
    write_bins(tmp_path / "bins", 2, 3)
    run = run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out")
    run.outputs[1].unlink()
    shard = Shard(index=0, start=0, count=2, parity=(1,))
    with pytest.raises(InferenceError, match="1 output"):
        hand_over(store, shard, run.output_dir, {"grids": 2})
    assert not store.exists(render_key(0))


def test_outputs_written_before_rendering_are_rendered_on_several_threads(tmp_path, upstream_onnx):
    """The ascend task's path: msame writes every output, then the worker renders them."""
    write_bins(tmp_path / "bins", 4, 3)
    run = run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out")
    streamed = open_store((tmp_path / "streamed").as_uri())
    renderer = ShardRenderer(_packer(streamed, tmp_path / "s", 0, 4))
    for out in run.outputs:
        renderer.submit(out, read_output_bin(out))
    after = open_store((tmp_path / "after").as_uri())
    progress = []
    tally = render_outputs(_packer(after, tmp_path / "a", 0, 4), run.outputs, threads=3,
                           progress=lambda n, t: progress.append(n))
    streamed_tally = renderer.finish()
    assert progress == [1, 2, 3, 4]
    assert {k: v for k, v in tally.items() if k != "packs"} == {k: v for k, v in streamed_tally.items()
                                                                if k != "packs"}
    assert [(p["key"], p["size"]) for p in tally["packs"]["packs"]] == [
        (p["key"], p["size"]) for p in streamed_tally["packs"]["packs"]] == [("packs/pack_00000000.tar",
                                                                             after.path("packs/pack_00000000.tar")
                                                                             .stat().st_size)]
    assert after.list("packs") == streamed.list("packs")
    assert _grids(after) == _grids(streamed) and len(_grids(after)) == 4


@pytest.mark.parametrize("two_workspaces", [True], indirect=True, ids=["keep_raw_outputs"])
@pytest.mark.parametrize("damage, reason", [
    (lambda t: t.update(classifier_sha256="0" * 64), "another classifier"),
    (lambda t: t.update(grids=2), "2 grids rendered, the shard has 3"),
    (lambda t: t.update(first="grid_00000001"), "rendered grid_00000001..grid_00000002"),
    (lambda t: t["correct"].__setitem__(0, 10**6), "counts do not add up"),
    (lambda t: t.update(total=[1] * 9), "bad 'total' counts"),
    (lambda t: t.update(version=1, packs=None, staged=None), "unknown render.json version"),
    (lambda t: t["packs"]["packs"][0].update(count=2), "the packs cover grids 0..1, the shard is 0..2"),
    (lambda t: t["packs"].update(packs=[]), "no packs listed"),
    (lambda t: t["packs"]["packs"][0].update(key="quality/quality.json"), "of grid 0 is not packs/pack_00000000.tar"),
])
def test_a_render_json_that_does_not_fit_is_ignored_and_the_shard_rendered(
        two_workspaces, upstream_checkpoint, damage, reason):
    streamed, plain, shards = two_workspaces
    key = render_key(0)
    tally = json.loads(streamed.get_bytes(key))
    damage(tally)
    streamed.put_bytes(json.dumps(tally).encode(), key)
    counting, lines = CountingStore(streamed), []
    postprocess_run(counting, shards, upstream_checkpoint, log=lines.append)
    assert sorted(counting.pack_puts) == PACKS[:2]  # shard 0 rendered again, shard 1 merged
    assert any(reason in line and "rendering its grids again" in line for line in lines)
    postprocess_run(plain, shards, upstream_checkpoint, log=lambda m: None)
    assert streamed.get_bytes("quality/quality.json") == plain.get_bytes("quality/quality.json")
    assert _grids(streamed) == _grids(plain)


def test_a_render_json_that_does_not_fit_without_raw_outputs_refuses_the_shard(two_workspaces,
                                                                              upstream_checkpoint):
    streamed, _, shards = two_workspaces
    tally = json.loads(streamed.get_bytes(render_key(0)))
    streamed.put_bytes(json.dumps(dict(tally, grids=2)).encode(), render_key(0))
    with pytest.raises(InferenceError, match="shard 0 is incomplete: 2 of 3 output bins missing"):
        postprocess_run(streamed, shards, upstream_checkpoint, log=lambda m: None)
    assert not streamed.exists("quality/quality.json")


def test_a_missing_pack_without_raw_outputs_refuses_the_shard(two_workspaces, upstream_checkpoint):
    streamed, _, shards = two_workspaces
    streamed.path("packs/pack_00000003.tar").unlink()
    lines = []
    with pytest.raises(InferenceError, match="shard 1 is incomplete: 1 of 2 output bins missing .*re-run its "
                                             "inference task"):
        postprocess_run(streamed, shards, upstream_checkpoint, log=lines.append)
    assert any("1 pack(s) missing (first: packs/pack_00000003.tar)" in line for line in lines)
    assert not streamed.exists(STAGED_KEY) and not streamed.exists("quality/quality.json")


def test_a_missing_pack_with_raw_outputs_kept_is_rendered_again(tmp_path, upstream_onnx, upstream_checkpoint):
    store = open_store((tmp_path / "ws").as_uri())
    shards = plan_shards(3, "cpu", [0], 3, keep_raw_outputs=True)
    _run_shards(tmp_path, upstream_onnx, store, shards, render=True)
    made = _grids(store)
    store.path("packs/pack_00000000.tar").unlink()
    lines = []
    postprocess_run(store, shards, upstream_checkpoint, log=lines.append)
    assert any("1 pack(s) missing (first: packs/pack_00000000.tar)" in line for line in lines)
    assert store.list("packs") == ["packs/pack_00000000.json", "packs/pack_00000000.tar"]
    assert _grids(store) == made and len(made) == 3
    (entry,) = json.loads(store.get_bytes(STAGED_KEY))["shards"]
    raw = store.get_bytes("packs/pack_00000000.tar")
    assert entry["packs"][0]["size"] == len(raw) and entry["bucket"] is None  # the new pack, not the lost one


def test_renderer_output_matches_the_grid_contract(tmp_path, upstream_onnx):
    store = open_store((tmp_path / "ws").as_uri())
    write_bins(tmp_path / "bins", 2, 3)
    renderer = ShardRenderer(_packer(store, tmp_path, 0, 2))
    run = run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out", on_output=renderer.submit)
    tally = renderer.finish()
    assert tally["version"] == 2 and "staged" not in tally
    assert tally["grids"] == 2 and (tally["first"], tally["last"]) == ("grid_00000000", "grid_00000001")
    assert sum(tally["total"]) == 200 and tally["total"] == [20] * 10
    assert _grids(store) == [(out.name.replace("_output_0.bin", ".png"), png_bytes(grid_array(read_output_bin(out))))
                             for out in run.outputs]
    assert tally["packs"]["packs"][0]["key"] == "packs/pack_00000000.tar" and tally["packs"]["bucket"] is None
    assert check_render(tally, Shard(index=0, start=0, count=2), tally["classifier_sha256"]) is None
    assert check_render(dict(tally, grids=3, last="grid_00000002"), Shard(index=0, start=0, count=3, judge=(0, 1)),
                        tally["classifier_sha256"]) == "the packs cover grids 0..1, the shard is 0..2"


class FailingSink:
    def where(self):
        return "the failing sink"

    def put(self, path, index):
        raise OSError("disk full")


def test_a_failed_pack_upload_fails_the_shard(tmp_path, upstream_onnx):
    write_bins(tmp_path / "bins", 3, 3)
    renderer = ShardRenderer(ShardPacker(FailingSink(), 0, 3, tmp_path / "packs"))
    with pytest.raises(InferenceError, match="uploading a pack to the failing sink failed: disk full"):
        run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out", on_output=renderer.submit)
        renderer.finish()
    renderer.close()


def test_a_failed_render_fails_the_shard(tmp_path, upstream_onnx):
    """An output the shard's packer does not take (a foreign grid) fails the render."""
    write_bins(tmp_path / "bins", 3, 3)
    store = open_store((tmp_path / "ws").as_uri())
    renderer = ShardRenderer(_packer(store, tmp_path, 1, 3))
    with pytest.raises(InferenceError, match="rendering grids failed: grid 0 is not a grid of this shard"):
        run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out", on_output=renderer.submit)
        renderer.finish()
    renderer.close()
    assert store.list("packs") == []


class BlockingPacker:
    """A packer whose puts wait for `release` (a store that is slow to take the grids)."""

    def __init__(self):
        self.release = threading.Event()
        self.grids = []

    def put(self, grid, png):
        self.release.wait(10)
        self.grids.append(grid)

    def finish(self):
        return {}

    def close(self):
        pass


def test_at_most_max_pending_outputs_wait(tmp_path, upstream_onnx):
    import numpy as np

    store = BlockingPacker()
    renderer = ShardRenderer(store, max_pending=2)
    samples = np.zeros((100, 1, 28, 28), dtype=np.float32)
    renderer.submit(tmp_path / "grid_00000000_output_0.bin", samples)
    renderer.submit(tmp_path / "grid_00000001_output_0.bin", samples)
    third = threading.Thread(target=renderer.submit, args=(tmp_path / "grid_00000002_output_0.bin", samples))
    third.start()
    third.join(0.5)
    assert third.is_alive()  # blocked: two are pending
    store.release.set()
    third.join(10)
    assert renderer.finish()["grids"] == 3 and sorted(store.grids) == [0, 1, 2]


def test_only_the_label_sample_is_judged_and_every_grid_rendered(tmp_path, upstream_onnx):
    write_bins(tmp_path / "bins", 3, 3)
    store = open_store((tmp_path / "ws").as_uri())
    shard = Shard(index=0, start=0, count=3, parity=(), judge=(1,))
    packer = _packer(store, tmp_path, 0, 3)
    renderer = ShardRenderer(packer, judge=shard.judged_stems)
    run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out", on_output=renderer.submit)
    tally = renderer.finish()
    assert tally["grids"] == 3 and tally["judged"] == 1 and sum(tally["total"]) == 100
    assert len(_grids(store)) == 3
    assert renderer.cpu_s["render"] > 0 and renderer.cpu_s["judge"] > 0 and packer.cpu_s["pack"] > 0
    assert check_render(tally, shard, tally["classifier_sha256"]) is None
    assert "label sample has 2" in check_render(tally, replace(shard, judge=(0, 1)), tally["classifier_sha256"])
    assert check_render(tally, replace(shard, judge=None),
                        tally["classifier_sha256"]) is not None  # made without a sample: all judged


@pytest.mark.parametrize("while_running", [True, False], ids=["rendered-while-running", "rendered-after"])
def test_run_shard_packs_into_the_workspace_without_a_publish_bucket(tmp_path, upstream_onnx, while_running):
    """cgan.run.inference.run_shard, as an inference task runs it (no stager: the workspace's packs)."""
    store = open_store((tmp_path / "ws").as_uri())
    (shard,) = plan_shards(3, "cpu", [0], 3, parity_grids=1)
    write_bins(tmp_path / "bins0", shard.count, 9, start=shard.start)
    upload_pack(store, shard, tmp_path / "bins0")
    store.put_bytes(b"stale", render_key(0))  # an earlier try's: cleared before this one writes

    def runtime(bins, out, on_output):
        return run_onnxruntime(upstream_onnx, bins, out, on_output=on_output), []

    result = run_shard(store, shard, tmp_path / "work", runtime, render_while_running=while_running,
                       log=lambda m: None)
    assert result.staged_root is None and result.as_xcom()["staged_root"] is None
    tally = json.loads(store.get_bytes(render_key(0)))
    assert tally == result.tally and check_render(tally, shard, tally["classifier_sha256"]) is None
    assert store.list("packs") == PACKS[:2] and len(_grids(store)) == 3
    assert [k.rsplit("/", 1)[1] for k in store.list(shard.outputs_prefix) if k.endswith(".bin")] == [
        "grid_00000000_output_0.bin"]  # the parity sample only
    assert result.cpu_s["render"] > 0 and (not while_running or {"judge", "pack", "upload"} <= set(result.cpu_s))


def test_run_shard_hands_a_runtime_that_reads_packs_the_shards_pack_unsplit(tmp_path, upstream_onnx):
    """bins_pack=True (the ascend task with ais_bench, the cpu task): the runtime gets the
    shard's BinsPack while it downloads (check() waits for it, size checked), and no file per
    grid is written; the grids are those of the split bins."""
    from cgan.recipe.bins import BinsPack, split_bins_pack

    store = open_store((tmp_path / "ws").as_uri())
    (shard,) = plan_shards(3, "cpu", [0], 3, parity_grids=1)
    write_bins(tmp_path / "bins0", shard.count, 9, start=shard.start)
    upload_pack(store, shard, tmp_path / "bins0")
    given = []

    def runtime(inputs, out, on_output):
        given.append(inputs)
        assert isinstance(inputs, BinsPack) and (inputs.start, inputs.count) == (shard.start, shard.count)
        assert inputs.arriving is not None  # handed over before the download ends
        inputs = inputs.check()
        assert not (tmp_path / "work" / "bins").exists()  # never split
        split = split_bins_pack(inputs.path, tmp_path / "split", inputs.start, inputs.count)
        assert [p.read_bytes() for p in split] == [p.read_bytes() for p in sorted((tmp_path / "bins0").glob("*.bin"))]
        return run_onnxruntime(upstream_onnx, tmp_path / "split", out, on_output=on_output), []

    result = run_shard(store, shard, tmp_path / "work", runtime, log=lambda m: None, bins_pack=True)
    assert len(given) == 1 and result.tally["grids"] == 3 and len(_grids(store)) == 3
