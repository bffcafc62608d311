import json

import numpy as np
import pytest

from cgan.errors import InferenceError, InputBinError
from cgan.recipe.bins import write_bins
from cgan.recipe.export import export_onnx
from cgan.recipe.outputs import list_outputs, read_output_bin
from cgan.runtimes.onnxruntime_runner import run_onnxruntime
from cgan.runtimes.pytorch_runner import run_pytorch


@pytest.fixture(scope="module")
def bins(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bins")
    write_bins(folder, 3, seed=5)
    return folder


def test_outputs_in_msame_layout_with_perf(tmp_path, upstream_onnx, bins):
    ticks = []
    run = run_onnxruntime(upstream_onnx, bins, tmp_path / "out", threads=1,
                          progress=lambda d, t: ticks.append((d, t)))
    assert run.output_dir.parent == tmp_path / "out"
    assert [p.name for p in list_outputs(run.output_dir)] == [
        "grid_00000000_output_0.bin", "grid_00000001_output_0.bin", "grid_00000002_output_0.bin"]
    assert all(p.stat().st_size == 313_600 for p in run.outputs)
    assert ticks[-1] == (3, 3)
    perf = json.loads((run.output_dir / "perf.json").read_text())
    assert perf["backend"] == "onnxruntime" and perf["batch"] == 100 and perf["threads"] == 1
    assert perf["calls"] == 3 and perf["grids"] == 3 and perf["warmup_calls"] == 1
    assert set(perf["latency_ms"]) >= {"mean", "median", "p99"}
    assert perf["grids_per_s"] > 0 and perf["images_per_s"] == pytest.approx(perf["grids_per_s"] * 100, rel=1e-3)
    assert any("warm-up" in note for note in perf["notes"])


def test_matches_pytorch(tmp_path, upstream_onnx, upstream_checkpoint, bins):
    ort_run = run_onnxruntime(upstream_onnx, bins, tmp_path / "ort")
    torch_run = run_pytorch(upstream_checkpoint, bins, tmp_path / "torch")
    for a, b in zip(ort_run.outputs, torch_run.outputs, strict=True):
        assert a.name == b.name
        assert np.max(np.abs(read_output_bin(a) - read_output_bin(b))) < 1e-5


def test_batch_of_two_grids_pads_the_last_call(tmp_path, upstream_checkpoint, upstream_onnx, bins):
    model200 = export_onnx(upstream_checkpoint, tmp_path / "b200.onnx", batch=200).onnx_path
    run200 = run_onnxruntime(model200, bins, tmp_path / "o200")
    run100 = run_onnxruntime(upstream_onnx, bins, tmp_path / "o100")
    assert run200.perf.calls == 2 and run200.perf.grids == 3
    for a, b in zip(run200.outputs, run100.outputs, strict=True):
        assert np.max(np.abs(read_output_bin(a) - read_output_bin(b))) < 1e-5


def test_each_run_gets_its_own_folder(tmp_path, upstream_onnx, bins):
    a = run_onnxruntime(upstream_onnx, bins, tmp_path / "out", warmup=0)
    b = run_onnxruntime(upstream_onnx, bins, tmp_path / "out", warmup=0)
    assert a.output_dir != b.output_dir
    assert a.outputs[0].read_bytes() == b.outputs[0].read_bytes()


def test_wrong_size_input_fails_before_any_output(tmp_path, upstream_onnx):
    write_bins(tmp_path / "bins", 2, seed=0)
    (tmp_path / "bins" / "grid_00000001.bin").write_bytes(b"\0" * 28_796)
    with pytest.raises(InputBinError, match="28,796 bytes"):
        run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_empty_input_folder(tmp_path, upstream_onnx):
    (tmp_path / "bins").mkdir()
    with pytest.raises(InputBinError, match="no \\*.bin files"):
        run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out")


def test_missing_or_broken_model(tmp_path, bins):
    with pytest.raises(InferenceError, match="not found; create it with `cgan export`"):
        run_onnxruntime(tmp_path / "none.onnx", bins, tmp_path / "out")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(InferenceError, match="cannot load"):
        run_onnxruntime(tmp_path / "junk.onnx", bins, tmp_path / "out")


def test_negative_threads(tmp_path, upstream_onnx, bins):
    with pytest.raises(InferenceError, match="threads must be"):
        run_onnxruntime(upstream_onnx, bins, tmp_path / "out", threads=-1)


def test_each_output_is_handed_over_once_written_in_order(tmp_path, upstream_onnx, bins):
    seen = []

    def on_output(path, samples):
        assert path.is_file()  # written before it is handed over
        np.testing.assert_array_equal(read_output_bin(path), samples)
        seen.append(path.name)

    run = run_onnxruntime(upstream_onnx, bins, tmp_path / "out", on_output=on_output)
    assert seen == [p.name for p in run.outputs] == [p.name for p in list_outputs(run.output_dir)]


def test_only_the_named_raw_outputs_are_written_yet_every_output_is_handed_over(tmp_path, upstream_onnx, bins):
    seen = {}

    def on_output(path, samples):
        seen[path.name] = samples.copy()

    run = run_onnxruntime(upstream_onnx, bins, tmp_path / "out", on_output=on_output, write_stems={"grid_00000001"})
    assert [p.name for p in list_outputs(run.output_dir)] == [p.name for p in run.outputs] == [
        "grid_00000001_output_0.bin"]
    assert sorted(seen) == [f"grid_0000000{i}_output_0.bin" for i in range(3)]
    np.testing.assert_array_equal(read_output_bin(run.outputs[0]), seen["grid_00000001_output_0.bin"])
    assert run.perf.grids == 3  # every grid was computed


def test_a_failing_output_consumer_fails_the_run_without_perf_json(tmp_path, upstream_onnx, bins):
    def on_output(path, samples):
        if path.name.startswith("grid_00000001"):
            raise OSError("no space left on device")

    with pytest.raises(OSError, match="no space left"):
        run_onnxruntime(upstream_onnx, bins, tmp_path / "out", on_output=on_output)
    assert not list((tmp_path / "out").rglob("perf.json"))  # the run folder does not read as complete


@pytest.mark.parametrize("batch", [100, 200], ids=["one-grid-calls", "two-grid-calls-padded"])
def test_a_bins_pack_is_read_in_place_as_its_split_bins(tmp_path, upstream_checkpoint, upstream_onnx, batch):
    """A shard's BinsPack (grids 40..42) gives the outputs, names and bytes of its split bins; a
    pack cut short during the run is refused naming it and the fix."""
    from cgan.recipe.bins import BinsPack, split_bins_pack, write_bins_pack

    model = upstream_onnx if batch == 100 else export_onnx(upstream_checkpoint, tmp_path / "b200.onnx",
                                                           batch=200).onnx_path
    pack = write_bins_pack(tmp_path / "shard.pack", 3, seed=5, start=40)
    ours = run_onnxruntime(model, BinsPack(pack, 40, 3), tmp_path / "pack-out")
    split_bins_pack(pack, tmp_path / "split", 40, 3)
    theirs = run_onnxruntime(model, tmp_path / "split", tmp_path / "split-out")
    assert [p.name for p in ours.outputs] == [p.name for p in theirs.outputs] == [
        "grid_00000040_output_0.bin", "grid_00000041_output_0.bin", "grid_00000042_output_0.bin"]
    assert [p.read_bytes() for p in ours.outputs] == [p.read_bytes() for p in theirs.outputs]
    with pytest.raises(InputBinError, match=r"shard.pack has .* not the 4 x .*re-run input_bins"):
        run_onnxruntime(model, BinsPack(pack, 40, 4), tmp_path / "bad")


def test_a_pack_cut_short_during_the_run_is_refused(tmp_path):
    from cgan.recipe.bins import write_bins_pack
    from cgan.runtimes.folder_runner import read_pack_rows

    pack = write_bins_pack(tmp_path / "shard.pack", 2, seed=5, start=0)
    x = np.zeros((200, 72), np.float32)
    with open(pack, "rb", buffering=0) as fh:
        read_pack_rows(fh, 0, 2, x)
        assert x[100:].any()
        with open(pack, "r+b") as cut:
            cut.truncate(40_000)
        with pytest.raises(InputBinError, match=r"shard.pack gave 11,200 bytes at grid 1, not 28,800: it changed"):
            read_pack_rows(fh, 1, 1, x)
