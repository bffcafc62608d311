"""cgan.ascend.ais_bench against the STAND-IN ais_bench/aclruntime API (tests/standins/
ais_bench_api: the "om" is the ONNX file, run with ONNX Runtime; no NPU runs)."""

import json
import os
import shutil

import numpy as np
import pytest

from cgan.ascend.ais_bench import run_ais_bench
from cgan.ascend.errors import AscendError
from cgan.recipe.outputs import list_outputs
from cgan.runtimes.onnxruntime_runner import run_onnxruntime
from tests.standins.fixtures import *  # noqa: F401,F403  (stand-in fixtures)


@pytest.mark.parametrize("spelling", ["sumary", "summary"])
def test_outputs_perf_and_rendering_callback(spelling, ais_bench_api, clean_env, standin_om, bins3, tmp_path):
    clean_env.setenv("STANDIN_AIS_BENCH_SUMMARY", spelling)
    clean_env.setenv("STANDIN_NPU_DELAY_S", "0.02")
    seen = []
    run = run_ais_bench(standin_om, bins3, tmp_path / "out", device=3, on_output=lambda p, s: seen.append((p, s)))
    reference = run_onnxruntime(standin_om, bins3, tmp_path / "ort")
    assert [p.name for p in run.outputs] == [p.name for p in list_outputs(reference.output_dir)]
    for ours, theirs in zip(run.outputs, list_outputs(reference.output_dir), strict=True):
        np.testing.assert_allclose(np.fromfile(ours, "<f4"), np.fromfile(theirs, "<f4"), atol=1e-5)
    assert [p for p, _ in seen] == run.outputs and all(s.shape == (100, 1, 28, 28) for _, s in seen)
    perf = json.loads((run.output_dir / "perf.json").read_text())
    assert perf["backend"] == "ais_bench" and perf["device"] == "npu:3" and perf["calls"] == 3
    assert perf["warmup_calls"] == 1 and len(perf["samples_ms"]) == 3
    assert perf["latency_ms"]["min"] >= 20  # the stand-in's 20 ms per execute, from exec_time_list
    assert any("exec_time_list" in note for note in perf["notes"])


def test_a_device_the_host_lacks_is_refused(ais_bench_api, clean_env, standin_om, bins3, tmp_path):
    clean_env.setenv("STANDIN_MSAME_DEVICES", "0,1")
    from cgan.ascend.errors import AisBenchError

    with pytest.raises(AisBenchError, match="could not open NPU 5 .*107001"):
        run_ais_bench(standin_om, bins3, tmp_path / "out", device=5)


def test_the_standin_detects_two_users_of_one_device(ais_bench_api, clean_env, standin_om, tmp_path):
    clean_env.setenv("STANDIN_NPU_STATE_DIR", str(tmp_path / "npu"))
    from ais_bench.infer.interface import InferSession

    first = InferSession(0, str(standin_om))
    with pytest.raises(RuntimeError, match="in use by another process"):
        InferSession(0, str(standin_om))
    del first  # dropped without finalize(): its destructor frees the device, ACL stays up
    second = InferSession(0, str(standin_om))
    second.finalize()


def test_no_session_opens_after_finalize_in_one_process(ais_bench_api, clean_env, standin_om, capfd):
    """aclruntime: TensorContext (a process-wide singleton) calls aclInit once; finalize() calls
    aclFinalize; the next session's aclrtSetDevice fails (ACL_ERROR_UNINITIALIZE)."""
    from ais_bench.infer.interface import InferSession

    InferSession(0, str(standin_om)).finalize()
    with pytest.raises(RuntimeError, match=r"^\[100001\]\[ACL is not initialized\] $"):
        InferSession(1, str(standin_om))
    assert "[ERROR] acl open device 1 failed" in capfd.readouterr().out


def test_each_run_feeds_its_npu_from_a_process_of_its_own(ais_bench_api, clean_env, standin_om, bins3, tmp_path):
    """aclruntime's run() holds the GIL while the NPU computes, and ACL lives once per process: each
    run's session is in a child process, never finalized, so a finalize() in the caller's process
    stops no later run, and the device is free between runs."""
    usage = tmp_path / "usage.jsonl"
    clean_env.setenv("STANDIN_NPU_STATE_DIR", str(tmp_path / "npu"))
    clean_env.setenv("STANDIN_NPU_USAGE_LOG", str(usage))
    first = run_ais_bench(standin_om, bins3, tmp_path / "a", device=0)
    from ais_bench.infer.interface import InferSession

    InferSession(1, str(standin_om)).finalize()  # ACL finalized in this (the caller's) process
    second = run_ais_bench(standin_om, bins3, tmp_path / "b", device=0)
    assert len(first.outputs) == len(second.outputs) == 3
    for a, b in zip(first.outputs, second.outputs, strict=True):
        assert a.read_bytes() == b.read_bytes()
    pids = [json.loads(line)["pid"] for line in usage.read_text().splitlines()]
    uses = [json.loads(line) for line in usage.read_text().splitlines()]
    assert [u["device"] for u in uses] == [0, 1, 0]  # run, the caller's probe, run
    assert len(set(pids)) == 3 and os.getpid() == pids[1]  # each run's session in a process of its own


def test_a_crash_of_the_npu_process_fails_the_run_with_the_signal(ais_bench_api, clean_env, standin_om, bins3,
                                                                 tmp_path):
    from cgan.ascend.errors import AisBenchError

    clean_env.setenv("STANDIN_AIS_BENCH_CRASH", "1")
    with pytest.raises(AisBenchError, match="NPU process on NPU 2 ended \\(signal SIGSEGV\\) before its last output"):
        run_ais_bench(standin_om, bins3, tmp_path / "out", device=2)


def test_the_npu_process_dies_with_the_task(ais_bench_api, clean_env, standin_om, bins3, tmp_path):
    """A SIGKILLed task (Airflow's execution_timeout, a lost worker) leaves no orphan feeding the NPU:
    the NPU process gets SIGKILL with it (PR_SET_PDEATHSIG) and the device's lock is free at once."""
    import fcntl
    import subprocess
    import sys
    import time

    state = tmp_path / "npu"
    clean_env.setenv("STANDIN_NPU_STATE_DIR", str(state))
    clean_env.setenv("STANDIN_AIS_BENCH_TIMED_MS", "3000")  # each call 3 s: an orphan would hold on
    script = (f"from cgan.ascend.ais_bench import run_ais_bench\n"
              f"run_ais_bench({str(standin_om)!r}, {str(bins3)!r}, {str(tmp_path / 'out')!r}, device=4)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ais_bench_api), os.getcwd()])}
    task = subprocess.Popen([sys.executable, "-c", script], env=env)
    lock = state / "device4.busy"
    deadline = time.monotonic() + 60
    while not (lock.exists() and _locked(lock)):  # the NPU process has opened the device
        assert time.monotonic() < deadline and task.poll() is None, "the run never opened NPU 4"
        time.sleep(0.05)
    time.sleep(0.5)  # inside the first timed calls
    task.kill()
    task.wait()
    deadline = time.monotonic() + 2
    while _locked(lock):
        assert time.monotonic() < deadline, "the NPU process outlived its task"
        time.sleep(0.05)
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def _locked(path) -> bool:
    import fcntl

    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def test_float16_outputs_of_an_fp16_om_render_as_float32_ones(ais_bench_api, clean_env, standin_om, bins3,
                                                             tmp_path):
    """An om converted without --output_type=FP32: aclruntime returns float16 arrays."""
    from ais_bench.infer.interface import InferSession

    from cgan.recipe.bins import read_input_bin
    from cgan.recipe.grids import grid_array
    from cgan.recipe.outputs import read_output_bin

    clean_env.setenv("STANDIN_AIS_BENCH_FP16", "1")
    probe = InferSession(0, str(standin_om))
    assert probe.infer([read_input_bin(bins3 / "grid_00000000.bin")])[0].dtype == np.float16
    del probe
    seen = {}
    run = run_ais_bench(standin_om, bins3, tmp_path / "out", device=0, on_output=lambda p, s: seen.update({p: s}))
    reference = run_onnxruntime(standin_om, bins3, tmp_path / "ort")
    for ours, theirs in zip(run.outputs, list_outputs(reference.output_dir), strict=True):
        assert ours.stat().st_size == theirs.stat().st_size  # float32 bins, whatever the om's dtype
        got, want = read_output_bin(ours), read_output_bin(theirs)
        assert seen[ours].dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-3)  # float16 rounding, no more
        assert not np.array_equal(got, want)  # it really went through float16
        pixels = grid_array(got).astype(int) - grid_array(want).astype(int)
        assert np.abs(pixels).max() <= 1


def test_missing_ais_bench_names_the_wheels(clean_env, monkeypatch, standin_om, bins3, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "ais_bench", None)  # import fails as if not installed
    with pytest.raises(AscendError, match="'ais_bench' is not installed on this worker.*aclruntime-.*whl"):
        run_ais_bench(standin_om, bins3, tmp_path / "out", device=0)


def test_missing_aclruntime_names_it(clean_env, monkeypatch, standin_om, bins3, tmp_path):
    import sys

    only_ais_bench = tmp_path / "site"
    shutil.copytree(STANDINS / "ais_bench_api" / "ais_bench", only_ais_bench / "ais_bench")  # noqa: F405
    for name in [m for m in sys.modules if m == "aclruntime" or m.split(".")[0] == "ais_bench"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(only_ais_bench))
    with pytest.raises(AscendError, match="'aclruntime' is not installed on this worker"):
        run_ais_bench(standin_om, bins3, tmp_path / "out", device=0)
    for name in [m for m in sys.modules if m.split(".")[0] == "ais_bench"]:
        del sys.modules[name]


@pytest.mark.parametrize("pipeline", [True, False, "wrapping"], ids=["infer_pipeline", "infer-per-call",
                                                                     "chunks-across-the-ring's-end"])
def test_calls_go_16_at_a_time_through_infer_pipeline_where_ais_bench_has_it(
        pipeline, ais_bench_api, clean_env, standin_om, tmp_path):
    """40 grids: chunks of 16, 16 and 8 calls (infer_pipeline), or 40 infer calls (the 2023-06
    interface, which has none); a slow renderer makes the NPU's process wait for free slots.
    "wrapping": chunks of 5 in a ring of 16 slots, so chunks run across the ring's end and go in
    as two writes."""
    import time

    from cgan.ascend.ais_bench import NpuProcess
    from cgan.recipe.bins import write_bins

    if not pipeline:
        clean_env.setenv("STANDIN_AIS_BENCH_NO_PIPELINE", "1")
    if pipeline == "wrapping":
        clean_env.setattr(NpuProcess, "PIPELINE_CALLS", 5)
        clean_env.setattr(NpuProcess, "SLOTS", 16)
    bins = tmp_path / "bins"
    write_bins(bins, 40, seed=11)
    seen = []
    run = run_ais_bench(standin_om, bins, tmp_path / "out", device=0,
                        on_output=lambda p, s: (seen.append(p.name), time.sleep(0.005)))
    reference = run_onnxruntime(standin_om, bins, tmp_path / "ort")
    assert seen == [p.name for p in list_outputs(reference.output_dir)]  # every grid once, in order
    for ours, theirs in zip(run.outputs, list_outputs(reference.output_dir), strict=True):
        np.testing.assert_allclose(np.fromfile(ours, "<f4"), np.fromfile(theirs, "<f4"), atol=1e-5)
    perf = json.loads((run.output_dir / "perf.json").read_text())
    assert perf["calls"] == 40 and len(perf["samples_ms"]) == 40  # exec_time_list: one per execute
    said = ("calls went to the NPU 16 at a time through infer_pipeline" if pipeline is True
            else "calls went to the NPU 5 at a time" if pipeline else "this ais_bench has no infer_pipeline")
    assert any(said in note for note in perf["notes"]), perf["notes"]


def test_the_standin_pipeline_runs_the_calls_back_to_back_holding_the_gil(ais_bench_api, clean_env, standin_om):
    """The timed stand-in's run_pipeline: 20 calls of 5 ms take 100 ms, not 20 x (5 ms + the
    copies), and no other thread of the process runs Python meanwhile (the binding holds the GIL)."""
    import threading
    import time

    clean_env.setenv("STANDIN_AIS_BENCH_TIMED_MS", "5")
    from ais_bench.infer.interface import InferSession

    session = InferSession(0, str(standin_om))
    x = np.zeros((100, 72), np.float32)
    first = session.infer([x])[0]  # the one computed output
    ticks, stop = [], threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=ticker)
    thread.start()
    time.sleep(0.01)
    t0 = time.perf_counter()
    calls = session.infer_pipeline([[x]] * 20)
    wall = time.perf_counter() - t0
    stop.set()
    thread.join()
    assert len(calls) == 20 and all(np.array_equal(c[0], first) for c in calls)
    assert 0.1 <= wall < 0.13, wall  # back to back: 20 x 5 ms, and at most 1.5 ms more per call
    assert not [t for t in ticks if t0 + 0.01 < t < t0 + wall - 0.01]  # no tick while the call ran
    times = session.sumary().exec_time_list[1:]
    assert len(times) == 20 and min(times) >= 5.0


def test_a_shards_bins_pack_is_read_in_place(ais_bench_api, clean_env, standin_om, tmp_path):
    """The ascend task's input: the shard's pack (grids 30..34), not a file per grid. Outputs are
    those of the split bins, named by grid; a pack of the wrong size is refused with the fix."""
    from cgan.errors import InputBinError
    from cgan.recipe.bins import BinsPack, split_bins_pack, write_bins_pack

    pack = write_bins_pack(tmp_path / "shard.pack", 5, seed=3, start=30)
    run = run_ais_bench(standin_om, BinsPack(pack, 30, 5), tmp_path / "out", device=0)
    split = split_bins_pack(pack, tmp_path / "split", 30, 5)
    reference = run_onnxruntime(standin_om, tmp_path / "split", tmp_path / "ort")
    assert [p.name for p in run.outputs] == [p.name for p in list_outputs(reference.output_dir)]
    assert run.outputs[0].name.startswith(split[0].stem)
    for ours, theirs in zip(run.outputs, list_outputs(reference.output_dir), strict=True):
        np.testing.assert_allclose(np.fromfile(ours, "<f4"), np.fromfile(theirs, "<f4"), atol=1e-5)
    with pytest.raises(InputBinError, match=r"shard.pack has .* not the 6 x .*re-run input_bins"):
        run_ais_bench(standin_om, BinsPack(pack, 30, 6), tmp_path / "out2", device=0)


def test_the_npu_process_asks_for_short_slices_that_its_threads_inherit():
    """sched_setattr(SCHED_OTHER, sched_runtime = 0.1 ms): unprivileged, read back with
    sched_getattr in the process and in a thread it starts (aclruntime's pipeline threads);
    kernels before 6.12 (no EEVDF slices) keep their default, and nothing fails."""
    import platform
    import subprocess
    import sys

    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("sched_setattr's number is known for x86_64 and aarch64 only")
    probe = """
import ctypes, threading
from cgan.ascend.ais_bench_process import _SchedAttr, _short_slice
GET = {"x86_64": 315, "aarch64": 275}[__import__("platform").machine()]
def slice_ns():
    attr = _SchedAttr()
    ctypes.CDLL(None).syscall(GET, 0, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    return attr.sched_runtime
before, ok = slice_ns(), _short_slice()
seen = []
thread = threading.Thread(target=lambda: seen.append(slice_ns()))
thread.start(); thread.join()
print(before, ok, slice_ns(), seen[0])
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    before, ok, after, in_thread = int(out[0]), out[1] == "True", int(out[2]), int(out[3])
    release = tuple(int(n) for n in platform.release().split("-")[0].split(".")[:2])
    if release >= (6, 12):
        assert ok and before > 100_000 and after == in_thread == 100_000
    else:
        assert after == in_thread  # accepted or refused, the process runs on as it was


def _device_held(state, device: int) -> bool:
    """The stand-in session holds flock(device<N>.busy) in STANDIN_NPU_STATE_DIR while it is open."""
    import fcntl

    path = state / f"device{device}.busy"
    if not path.exists():
        return False
    with open(path, "rb") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def test_the_session_opens_while_the_shards_pack_arrives(ais_bench_api, clean_env, standin_om, tmp_path):
    """run_shard hands the runtime the pack while it downloads (BinsPack.arriving): the NPU's
    process opens its session meanwhile. Here the "download" writes the pack only once the
    stand-in has the device open: a run that waited for its inputs before starting the process
    would never get them (the download gives up after 30 s and the run fails)."""
    import threading
    import time
    from concurrent.futures import Future

    from cgan.recipe.bins import BinsPack, write_bins_pack

    state = tmp_path / "npu-state"
    clean_env.setenv("STANDIN_NPU_STATE_DIR", str(state))
    arriving: Future = Future()
    final = tmp_path / "shard.pack"

    def download():
        deadline = time.monotonic() + 30
        while not _device_held(state, 0):
            if time.monotonic() > deadline:
                arriving.set_exception(TimeoutError("the session did not open before the pack arrived"))
                return
            time.sleep(0.01)
        write_bins_pack(final, 20, seed=4, start=40)
        arriving.set_result(None)

    threading.Thread(target=download).start()
    run = run_ais_bench(standin_om, BinsPack(final, 40, 20, arriving=arriving), tmp_path / "out", device=0)
    reference = run_onnxruntime(standin_om, BinsPack(final, 40, 20), tmp_path / "ort")
    assert [p.name for p in run.outputs] == [p.name for p in reference.outputs]
    for ours, theirs in zip(run.outputs, reference.outputs, strict=True):
        np.testing.assert_allclose(np.fromfile(ours, "<f4"), np.fromfile(theirs, "<f4"), atol=1e-5)
    assert not _device_held(state, 0)  # the process is gone with its session


def test_a_download_that_fails_ends_the_opened_session_with_its_error(ais_bench_api, clean_env, standin_om,
                                                                      tmp_path):
    from concurrent.futures import Future

    from cgan.errors import InputBinError
    from cgan.recipe.bins import BinsPack

    state = tmp_path / "npu-state"
    clean_env.setenv("STANDIN_NPU_STATE_DIR", str(state))
    arriving: Future = Future()
    arriving.set_exception(InputBinError("shard 3: no input bins under bins/3/ in file:///ws: re-run input_bins"))
    with pytest.raises(InputBinError, match="re-run input_bins"):
        run_ais_bench(standin_om, BinsPack(tmp_path / "never.pack", 0, 5, arriving=arriving), tmp_path / "out",
                      device=0)
    assert not _device_held(state, 0)


def test_outputs_go_into_the_ring_whole_after_short_writes(monkeypatch):
    """The ring's writer: one pwritev per run of adjacent slots, resumed where a short write
    (a signal) left it; here every pwritev writes at most 1,000 bytes."""
    from cgan.ascend import ais_bench_process

    real = os.pwritev
    calls = []

    def short(fd, buffers, offset):
        calls.append(offset)
        budget, cut = 1000, []
        for b in buffers:
            cut.append(memoryview(b)[:budget])
            budget -= len(cut[-1])
            if not budget:
                break
        return real(fd, cut, offset)

    monkeypatch.setattr(ais_bench_process.os, "pwritev", short)
    ys = [np.full((3, 700), i, np.float32) for i in range(1, 4)]  # 8,400 bytes each
    fd = os.memfd_create("test-ring")
    try:
        os.ftruncate(fd, 64 * 1024)
        ais_bench_process._write_all(fd, ys, 8400 * 2)
        got = np.frombuffer(os.pread(fd, 8400 * 5, 0), np.float32).reshape(5, 3, 700)
    finally:
        os.close(fd)
    assert len(calls) == 26  # 25,200 bytes, 1,000 at a time
    assert not got[:2].any() and all((got[2 + i] == i + 1).all() for i in range(3))
