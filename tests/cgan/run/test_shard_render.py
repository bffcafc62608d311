"""Grids rendered on the inference worker (cgan.run.shard_render), the shard's hand-over, and
postprocess merging the tallies."""

import json
import threading
from dataclasses import replace

import pytest

from cgan.errors import InferenceError
from cgan.layout.workspace import RENDER_NAME, outputs_prefix, render_key
from cgan.recipe.bins import write_bins
from cgan.recipe.grids import grid_array, png_bytes
from cgan.recipe.outputs import read_output_bin
from cgan.run.plan import plan_shards
from cgan.run.postprocess import postprocess_run
from cgan.run.shard import Shard
from cgan.run.shard_render import ShardRenderer, check_render, hand_over, render_outputs
from cgan.runtimes.onnxruntime_runner import run_onnxruntime
from cgan.storage.store import open_store, upload_dir
from tests.workspaces import upload_pack


def _run_shards(tmp_path, onnx, store, shards, render: bool):
    """As the inference tasks leave a workspace: rendered and handed over, or (render=False)
    every raw output uploaded and no tally."""
    for shard in shards:
        local = tmp_path / shard.bins_prefix
        write_bins(local, shard.count, 9, start=shard.start)
        upload_pack(store, shard, local)
        renderer = ShardRenderer(store) if render else None
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
    """Passes through to a real store, counting grid PNG writes."""

    def __init__(self, store):
        self.store, self.png_puts = store, 0

    def put_bytes(self, data, key):
        self.png_puts += key.startswith("grids/")
        return self.store.put_bytes(data, key)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_rendered_shards_are_merged_not_rendered_again(two_workspaces, upstream_checkpoint):
    streamed, plain, shards = two_workspaces
    assert len(streamed.list("grids")) == 5 and plain.list("grids") == []  # made during inference
    counting, lines = CountingStore(streamed), []
    postprocess_run(counting, shards, upstream_checkpoint, log=lines.append)
    postprocess_run(plain, shards, upstream_checkpoint, log=lambda m: None)
    assert counting.png_puts == 0
    assert any("rendered during inference" in line for line in lines)
    assert streamed.list("grids") == plain.list("grids")
    for key in plain.list("grids"):  # byte-identical PNGs either way
        assert streamed.get_bytes(key) == plain.get_bytes(key)
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
    renderer = ShardRenderer(streamed)
    for out in run.outputs:
        renderer.submit(out, read_output_bin(out))
    after = open_store((tmp_path / "after").as_uri())
    progress = []
    tally = render_outputs(after, run.outputs, threads=3, progress=lambda n, t: progress.append(n))
    assert tally == renderer.finish() and progress == [1, 2, 3, 4]
    assert after.list("grids") == streamed.list("grids")
    for key in after.list("grids"):
        assert after.get_bytes(key) == streamed.get_bytes(key)


@pytest.mark.parametrize("two_workspaces", [True], indirect=True, ids=["keep_raw_outputs"])
@pytest.mark.parametrize("damage, reason", [
    (lambda t: t.update(classifier_sha256="0" * 64), "another classifier"),
    (lambda t: t.update(grids=2), "2 grids rendered, the shard has 3"),
    (lambda t: t.update(first="grid_00000001"), "rendered grid_00000001..grid_00000002"),
    (lambda t: t["correct"].__setitem__(0, 10**6), "counts do not add up"),
    (lambda t: t.update(total=[1] * 9), "bad 'total' counts"),
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
    assert counting.png_puts == 3  # shard 0 rendered again, shard 1 merged
    assert any(reason in line and "rendering its grids again" in line for line in lines)
    postprocess_run(plain, shards, upstream_checkpoint, log=lambda m: None)
    assert streamed.get_bytes("quality/quality.json") == plain.get_bytes("quality/quality.json")


def test_a_render_json_that_does_not_fit_without_raw_outputs_refuses_the_shard(two_workspaces,
                                                                              upstream_checkpoint):
    streamed, _, shards = two_workspaces
    tally = json.loads(streamed.get_bytes(render_key(0)))
    streamed.put_bytes(json.dumps(dict(tally, grids=2)).encode(), render_key(0))
    with pytest.raises(InferenceError, match="shard 0 is incomplete: 2 of 3 output bins missing"):
        postprocess_run(streamed, shards, upstream_checkpoint, log=lambda m: None)
    assert not streamed.exists("quality/quality.json")


def test_a_missing_png_without_raw_outputs_refuses_the_shard(two_workspaces, upstream_checkpoint):
    streamed, _, shards = two_workspaces
    streamed.path("grids/grid_00000004.png").unlink()
    lines = []
    with pytest.raises(InferenceError, match="shard 1 is incomplete: 1 of 2 output bins missing .*re-run its "
                                             "inference task"):
        postprocess_run(streamed, shards, upstream_checkpoint, log=lines.append)
    assert any("1 grid PNG(s) missing" in line for line in lines)


def test_a_missing_png_with_raw_outputs_kept_is_rendered_again(tmp_path, upstream_onnx, upstream_checkpoint):
    store = open_store((tmp_path / "ws").as_uri())
    shards = plan_shards(3, "cpu", [0], 3, keep_raw_outputs=True)
    _run_shards(tmp_path, upstream_onnx, store, shards, render=True)
    store.path("grids/grid_00000002.png").unlink()
    lines = []
    postprocess_run(store, shards, upstream_checkpoint, log=lines.append)
    assert any("1 grid PNG(s) missing" in line for line in lines)
    assert "grids/grid_00000002.png" in store.list("grids")


def test_renderer_output_matches_the_grid_contract(tmp_path, upstream_onnx):
    store = open_store((tmp_path / "ws").as_uri())
    write_bins(tmp_path / "bins", 2, 3)
    renderer = ShardRenderer(store)
    run = run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out", on_output=renderer.submit)
    tally = renderer.finish()
    assert tally["grids"] == 2 and (tally["first"], tally["last"]) == ("grid_00000000", "grid_00000001")
    assert sum(tally["total"]) == 200 and tally["total"] == [20] * 10
    for out in run.outputs:
        stem = out.name.replace("_output_0.bin", "")
        assert store.get_bytes(f"grids/{stem}.png") == png_bytes(grid_array(read_output_bin(out)))
    assert check_render(tally, Shard(index=0, start=0, count=2), tally["classifier_sha256"]) is None


class FailingStore:
    def put_bytes(self, data, key):
        raise OSError("disk full")


def test_a_failed_render_fails_the_shard(tmp_path, upstream_onnx):
    write_bins(tmp_path / "bins", 3, 3)
    renderer = ShardRenderer(FailingStore())
    with pytest.raises(InferenceError, match="rendering grids failed: disk full"):
        run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out", on_output=renderer.submit)
        renderer.finish()


class BlockingStore:
    def __init__(self):
        self.release = threading.Event()
        self.keys = []

    def put_bytes(self, data, key):
        self.release.wait(10)
        self.keys.append(key)


def test_at_most_max_pending_outputs_wait(tmp_path, upstream_onnx):
    import numpy as np

    store = BlockingStore()
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
    assert renderer.finish()["grids"] == 3 and len(store.keys) == 3


def test_only_the_label_sample_is_judged_and_every_grid_rendered(tmp_path, upstream_onnx):
    write_bins(tmp_path / "bins", 3, 3)
    store = open_store((tmp_path / "ws").as_uri())
    shard = Shard(index=0, start=0, count=3, parity=(), judge=(1,))
    renderer = ShardRenderer(store, judge=shard.judged_stems)
    run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out", on_output=renderer.submit)
    tally = renderer.finish()
    assert tally["grids"] == 3 and tally["judged"] == 1 and sum(tally["total"]) == 100
    assert len(store.list("grids")) == 3
    assert renderer.cpu_s["render"] > 0 and renderer.cpu_s["judge"] > 0
    assert check_render(tally, shard, tally["classifier_sha256"]) is None
    assert "label sample has 2" in check_render(tally, replace(shard, judge=(0, 1)), tally["classifier_sha256"])
    assert check_render(tally, replace(shard, judge=None),
                        tally["classifier_sha256"]) is not None  # made without a sample: all judged
