"""Worker faults: an inference process killed with SIGKILL mid-run, a task retried over the
outputs of an earlier try, postprocess over an incomplete shard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cgan.errors import InferenceError, InputBinError
from cgan.layout.packs import PackIndex, check_member, grid_of_member, read_members
from cgan.layout.tensors import OUTPUT_SUFFIX
from cgan.layout.workspace import STAGED_KEY, outputs_prefix
from cgan.recipe.bins import write_bins
from cgan.recipe.outputs import find_run_dir, list_outputs
from cgan.run.plan import plan_shards
from cgan.run.postprocess import postprocess_run
from cgan.runtimes.onnxruntime_runner import run_onnxruntime
from cgan.storage.store import LocalStore, upload_dir
from tests.airflow_stack import REPO
from tests.workspaces import upload_pack

GRIDS = 40
SEED = 11


@pytest.fixture(scope="module")
def bins40(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bins") / "bins"
    write_bins(folder, GRIDS, SEED)
    return folder


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, upstream_onnx, bins40):
    """The reference: the same model and bins, never interrupted."""
    return run_onnxruntime(upstream_onnx, bins40, tmp_path_factory.mktemp("clean"), threads=1).output_dir


def infer_cmd(onnx: Path, bins: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "cgan", "infer", "--model", str(onnx), "--input", str(bins),
            "--output", str(out), "--threads", "1"]


def kill_after_outputs(cmd: list[str], out_root: Path, at_least: int, timeout: float = 120) -> Path:
    """Start cmd, SIGKILL it once its run folder holds `at_least` outputs; its run folder."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            runs = [d for d in out_root.glob("*") if d.is_dir()] if out_root.is_dir() else []
            if runs and len(list(runs[0].glob(f"*{OUTPUT_SUFFIX}"))) >= at_least:
                proc.send_signal(signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail(f"inference ended before it could be killed: {proc.stderr.read()[-2000:]!r}")
            time.sleep(0.005)
        else:
            pytest.fail("no outputs appeared in time")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = [d for d in out_root.glob("*") if d.is_dir()]
    return run_dir


@pytest.mark.slow
def test_inference_killed_mid_run_then_retried_is_byte_identical(tmp_path, upstream_onnx, upstream_checkpoint, bins40,
                                                                  clean_run):
    out = tmp_path / "out"
    killed = kill_after_outputs(infer_cmd(upstream_onnx, bins40, out), out, at_least=5)
    partial = list_outputs(killed)
    assert 5 <= len(partial) < GRIDS and not (killed / "perf.json").exists()  # cut short, and it shows
    # the write that SIGKILL cut short: a temp file beside the outputs (planted, so it is always there)
    stray = killed / f".grid_{len(partial):08d}{OUTPUT_SUFFIX}.x1y2z3.part"
    stray.write_bytes(b"\0" * 1000)

    retry = subprocess.run(infer_cmd(upstream_onnx, bins40, out), cwd=REPO, capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert retry.returncode == 0, retry.stderr[-2000:]
    (retry_dir,) = [d for d in out.glob("*") if d.is_dir() and d != killed]
    assert (retry_dir / "perf.json").is_file()
    outputs = list_outputs(retry_dir)
    assert [p.name for p in outputs] == [p.name for p in list_outputs(clean_run)]
    for mine, reference in zip(outputs, list_outputs(clean_run), strict=True):
        assert mine.read_bytes() == reference.read_bytes(), mine.name
    for kept in partial:  # what the killed run did write is whole and right, too
        assert kept.read_bytes() == (clean_run / kept.name).read_bytes()
    assert stray not in list_outputs(killed) and not any(p.name.startswith(".") for p in outputs)
    # two run folders under one root: `cgan grids/quality` refuse to guess, they never mix them
    with pytest.raises(InputBinError, match="several inference runs"):
        find_run_dir(out)
    assert find_run_dir(retry_dir) == retry_dir

    # the killed run's outputs in a workspace, as a killed task would leave them: postprocess refuses
    store = LocalStore(tmp_path / "ws")
    shards = plan_shards(GRIDS, "cpu", [0], GRIDS)
    upload_pack(store, shards[0], bins40)
    prefix = outputs_prefix(0)
    upload_dir(store, killed, prefix)
    store.put_file(stray, f"{prefix}/{stray.name}")
    with pytest.raises(InferenceError, match=rf"shard 0 is incomplete: {GRIDS - len(partial)} of {GRIDS} output "
                                             r"bins missing .*re-run its inference task"):
        postprocess_run(store, shards, upstream_checkpoint)
    assert store.list("packs") == [] and not store.exists(STAGED_KEY)  # nothing rendered, nothing to publish


@pytest.mark.slow
def test_operator_killed_mid_upload_then_retried_leaves_a_whole_shard(tmp_path, upstream_onnx, upstream_checkpoint,
                                                                       bins40, clean_run):
    """OnnxRuntimeInferenceOperator in its own process, SIGKILLed while it hands over its outputs
    to the workspace; postprocess refuses the half-written shard; the retried task leaves exactly
    the clean run's outputs of the parity sample, its perf record and tally."""
    store = LocalStore(tmp_path / "ws")
    shard = plan_shards(GRIDS, "cpu", [0], GRIDS)[0]
    upload_pack(store, shard, bins40)
    prefix = outputs_prefix(0)
    code = ("import sys, json, time; from cgan.storage.store import LocalStore; put = LocalStore.put_file\n"
            "if sys.argv[3] == 'slow':  # a slow store, so the kill lands mid-upload on any machine\n"
            "    LocalStore.put_file = lambda self, *a: (time.sleep(0.05), put(self, *a))[1]\n"
            "from operators.onnxruntime_inference import OnnxRuntimeInferenceOperator as O\n"
            "O(task_id='onnxruntime_infer', workspace=sys.argv[1], shard=json.loads(sys.argv[2]), "
            "onnx_uri=sys.argv[4]).execute({})")
    import json

    cmd = [sys.executable, "-c", code, store.uri, json.dumps(shard.as_xcom())]
    model = [upstream_onnx.as_uri()]
    kill_after_outputs(cmd + ["slow"] + model, store.root / "outputs", at_least=3)
    left = store.list(prefix)
    assert 3 <= len(left) < GRIDS and f"{prefix}/perf.json" not in left and f"{prefix}/render.json" not in left
    with pytest.raises(InferenceError, match="shard 0 is incomplete"):
        postprocess_run(store, [shard], upstream_checkpoint)

    retry = subprocess.run(cmd + ["fast"] + model, cwd=REPO, capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert retry.returncode == 0, retry.stderr[-3000:]
    kept = [p for i, p in enumerate(list_outputs(clean_run)) if i in shard.parity]
    assert 0 < len(kept) < GRIDS
    assert store.list(prefix) == sorted(f"{prefix}/{p.name}" for p in kept) + [
        f"{prefix}/perf.json", f"{prefix}/render.json"]
    assert not [p for p in store.path(prefix).iterdir() if p.name.startswith(".")]  # no stray temp file
    for p in kept:
        assert store.get_bytes(f"{prefix}/{p.name}") == p.read_bytes()
    assert postprocess_run(store, [shard], upstream_checkpoint, log=lambda m: None)["grids"] == GRIDS


def plant_stale(store, prefix: str, good: Path) -> None:
    """What an earlier try could have left: a right-named output with wrong bytes, an output of a
    grid this shard does not have, a log."""
    store.put_bytes(b"\0" * good.stat().st_size, f"{prefix}/{good.name}")
    store.put_bytes(b"\0" * good.stat().st_size, f"{prefix}/grid_00000999{OUTPUT_SUFFIX}")
    store.put_bytes(b"old try", f"{prefix}/old-try.log")
    store.put_bytes(json.dumps({"version": 1, "grids": 999}).encode(), f"{prefix}/render.json")


def test_onnxruntime_retry_over_stale_outputs_does_not_mix(tmp_path, upstream_onnx, upstream_checkpoint, bins40,
                                                          clean_run, monkeypatch):
    from operators.onnxruntime_inference import OnnxRuntimeInferenceOperator

    store = LocalStore(tmp_path / "ws")
    shards = plan_shards(6, "cpu", [0], 6)
    write_bins(tmp_path / "bins6", 6, SEED)  # bins40's first six grids
    upload_pack(store, shards[0], tmp_path / "bins6")
    prefix = outputs_prefix(0)
    first = list_outputs(clean_run)[1]
    plant_stale(store, prefix, first)
    store.put_bytes(b"\0" * 4096, "packs/pack_00000000.tar")  # an earlier try's pack, cut short
    store.put_bytes(b'{"version": 1}', "packs/pack_00000000.json")
    OnnxRuntimeInferenceOperator(task_id="t", workspace=store.uri, shard=shards[0],
                                 onnx_uri=upstream_onnx.as_uri()).execute({})
    assert store.list(prefix) == [f"{prefix}/grid_0000000{i}{OUTPUT_SUFFIX}" for i in range(6)] + [
        f"{prefix}/perf.json", f"{prefix}/render.json"]
    assert store.get_bytes(f"{prefix}/{first.name}") == first.read_bytes()
    postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    assert store.list("packs") == ["packs/pack_00000000.json", "packs/pack_00000000.tar"]
    index = PackIndex.from_json(store.get_bytes("packs/pack_00000000.json"), first=0, count=6)
    pack = store.get_file("packs/pack_00000000.tar", tmp_path / "got" / "pack.tar")
    assert pack.stat().st_size == index.size  # this try's pack, whole, not the stale one
    members = [(name, check_member(index, grid_of_member(name), data)) for name, data in read_members(pack)]
    assert [name for name, _ in members] == [f"grid_0000000{i}.png" for i in range(6)]
    assert not [k for k in store.list("perf") if "old-try" in k]  # nothing stale reaches what is published


def test_msame_retry_over_stale_outputs_does_not_mix(tmp_path, standins_on_path, standin_om, bins3, upstream_onnx):
    from operators.ascend_inference import AscendInferenceOperator

    store = LocalStore(tmp_path / "ws")
    shard = plan_shards(3, "ascend", [0], 3)[0]
    upload_pack(store, shard, bins3)
    reference = run_onnxruntime(upstream_onnx, bins3, tmp_path / "ref").output_dir
    good = list_outputs(reference)[0]
    plant_stale(store, "outputs/shard_0000", good)
    AscendInferenceOperator(task_id="m", workspace=store.uri, om_uri=standin_om.as_uri(),
                           shard=shard.as_xcom()).execute({})
    keys = store.list("outputs/shard_0000")
    assert keys == [f"outputs/shard_0000/grid_0000000{i}{OUTPUT_SUFFIX}" for i in range(3)] + [
        "outputs/shard_0000/msame.log", "outputs/shard_0000/perf.json", "outputs/shard_0000/render.json"]
    assert store.get_bytes(f"outputs/shard_0000/{good.name}") != b"\0" * good.stat().st_size
