"""cgan.ascend.ais_bench against the STAND-IN ais_bench/aclruntime API (tests/standins/
ais_bench_api: the "om" is the ONNX file, run with ONNX Runtime; no NPU runs)."""

import json
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


def test_runs_in_one_process_keep_acl_up(ais_bench_api, clean_env, standin_om, bins3, tmp_path):
    """Two runs in one process (the DAG test's in-process tasks, a bench): the wrapper never calls
    finalize(), so the second opens its device; the device is released between them."""
    clean_env.setenv("STANDIN_NPU_STATE_DIR", str(tmp_path / "npu"))
    first = run_ais_bench(standin_om, bins3, tmp_path / "a", device=0)
    second = run_ais_bench(standin_om, bins3, tmp_path / "b", device=0)
    assert len(first.outputs) == len(second.outputs) == 3
    from ais_bench.infer.interface import InferSession

    InferSession(0, str(standin_om)).finalize()  # the stand-in does refuse once ACL is finalized
    from cgan.ascend.errors import AisBenchError

    with pytest.raises(AisBenchError, match="ACL was finalized earlier in this process.*only once per process"):
        run_ais_bench(standin_om, bins3, tmp_path / "c", device=0)


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
