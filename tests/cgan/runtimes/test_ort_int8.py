"""int8 through ONNX Runtime (real quantization, real kernels): cache, graph, outputs."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cgan.errors import InferenceError
from cgan.recipe.bins import make_input_batch, write_bins
from cgan.runtimes import ort_int8
from cgan.runtimes.onnxruntime_runner import make_session, run_onnxruntime
from cgan.runtimes.ort_graph import split_conv_transposes
from cgan.runtimes.ort_int8 import DEFAULT_SETTINGS, KEY_PROP, build_int8, int8_model, output_tail


@pytest.fixture(scope="module")
def committed_onnx(tmp_path_factory, committed_generator):
    from cgan.recipe.export import export_onnx

    return export_onnx(committed_generator, tmp_path_factory.mktemp("onnx") / "cgan.onnx").onnx_path


def test_the_int8_model_is_built_once_per_content_and_reused(tmp_path, upstream_onnx):
    builds = []
    first = int8_model(upstream_onnx, cache_dir=tmp_path, on_build=builds.append)
    again = int8_model(upstream_onnx, cache_dir=tmp_path, on_build=builds.append)
    assert first == again and len(builds) == 1
    assert first.name == f"cgan-int8-{builds[0][:32]}.onnx"
    stored = {p.key: p.value for p in onnx.load(first).metadata_props}
    assert stored[KEY_PROP] == builds[0]
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp file left behind
    copy = tmp_path / "elsewhere" / "cgan.onnx"  # same bytes under another name: same model
    copy.parent.mkdir()
    copy.write_bytes(upstream_onnx.read_bytes())
    assert int8_model(copy, cache_dir=tmp_path, on_build=builds.append) == first and len(builds) == 1


@pytest.mark.slow
def test_other_settings_or_another_model_get_their_own_entry(tmp_path, upstream_onnx, committed_onnx):
    keys = []
    int8_model(upstream_onnx, cache_dir=tmp_path, on_build=keys.append)
    int8_model(upstream_onnx, cache_dir=tmp_path, on_build=keys.append,
               settings=dict(DEFAULT_SETTINGS, fp32_output_tail=False))
    int8_model(committed_onnx, cache_dir=tmp_path, on_build=keys.append)
    assert len(set(keys)) == 3 and len(list(tmp_path.glob("cgan-int8-*.onnx"))) == 3


@pytest.mark.slow
def test_a_damaged_cache_entry_is_rebuilt(tmp_path, upstream_onnx):
    path = int8_model(upstream_onnx, cache_dir=tmp_path)
    path.write_bytes(b"not a model")
    builds = []
    assert int8_model(upstream_onnx, cache_dir=tmp_path, on_build=builds.append) == path and builds
    assert ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_cache_folder_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("CGAN_INT8_CACHE", str(tmp_path / "c"))
    assert ort_int8.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CGAN_INT8_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert ort_int8.default_cache_dir() == tmp_path / "x" / "cgan" / "int8"


def test_the_output_tail_is_the_last_conv_to_the_output(upstream_onnx):
    from onnx import version_converter

    model, _ = split_conv_transposes(version_converter.convert_version(onnx.load(upstream_onnx), 13))
    ops = {n.name: n.op_type for n in model.graph.node}
    tail = output_tail(model)
    assert [ops[n] for n in tail] == ["DepthToSpace", "Tanh", "Conv"]
    assert sum(op in ("Conv", "Gemm") for op in ops.values()) > 1  # the rest is quantized


def test_int8_runs_integer_kernels_with_an_fp32_output_tail(tmp_path, upstream_onnx):
    """ONNX Runtime fuses the Q/DQ pairs into its integer ops; the output tail stays float."""
    path = int8_model(upstream_onnx, cache_dir=tmp_path)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]
    assert ops.count("QGemm") == 2  # both Linear layers
    assert ops.count("QLinearConv") == 5  # the four phase Convs and the tap Conv
    tail = ops[len(ops) - ops[::-1].index("DequantizeLinear"):]  # after the last dequantize
    assert "Conv" in tail and ops[-1] == "DepthToSpace"
    assert not any(op.startswith("Q") for op in tail)
    head = ops[:len(ops) - len(tail)]
    assert head[-2:] == ["DepthToSpace", "DequantizeLinear"]  # the tap interleave moves uint8


def test_int8_outputs_stay_close_to_fp32(tmp_path, committed_onnx):
    x = make_input_batch(4, 0)
    fp32 = make_session(committed_onnx, 1).run(None, {"image": x})[0]
    int8 = make_session(committed_onnx, 1, precision="int8", int8_cache=tmp_path).run(None, {"image": x})[0]
    err = np.abs(int8 - fp32)
    assert 0 < err.mean() < 0.01 and err.max() < 0.5  # int8, not the fp32 graph under another name


@pytest.mark.slow
def test_int8_on_this_cpu_holds_the_parity_bound_over_a_run_sized_sample(tmp_path, committed_onnx):
    """The quality gate's int8 bound over 32 grids (the size of a run's parity sample). On an x86
    CPU without VNNI this fails without reduce_range (Zen 3: 0.62 > 0.5)."""
    from cgan.quality.report import PARITY_LIMITS

    fp32, int8 = make_session(committed_onnx, 1), make_session(committed_onnx, 1, precision="int8", int8_cache=tmp_path)
    worst, means = 0.0, []
    for grid in range(32):
        x = make_input_batch(1, grid)
        err = np.abs(int8.run(None, {"image": x})[0] - fp32.run(None, {"image": x})[0])
        worst, means = max(worst, float(err.max())), [*means, float(err.mean())]
    assert worst <= PARITY_LIMITS["int8"]["max_abs"] and np.mean(means) <= PARITY_LIMITS["int8"]["mean_abs"], worst


def test_without_the_split_the_recipe_graph_is_quantized(tmp_path, committed_onnx):
    """CGAN_ORT_SPLIT_DECONV=off: still int8 (ConvTranspose runs dequantized, so little faster)."""
    x = make_input_batch(4, 0)
    fp32 = make_session(committed_onnx, 1, split_deconv=False).run(None, {"image": x})[0]
    path = int8_model(committed_onnx, split_deconv=False, cache_dir=tmp_path)
    assert {n.op_type for n in onnx.load(path).graph.node} >= {"ConvTranspose", "QuantizeLinear"}
    int8 = make_session(committed_onnx, 1, split_deconv=False, precision="int8", int8_cache=tmp_path)
    err = np.abs(int8.run(None, {"image": x})[0] - fp32)
    assert 0 < err.mean() < 0.01 and err.max() < 0.5


@pytest.mark.slow
def test_a_run_records_its_precision(tmp_path, upstream_onnx, monkeypatch):
    monkeypatch.setenv("CGAN_INT8_CACHE", str(tmp_path / "cache"))
    write_bins(tmp_path / "bins", 2, seed=1)
    run = run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out", precision="int8")
    assert run.perf.tool["precision"] == "int8" and run.perf.grids == 2
    assert list((tmp_path / "cache").glob("cgan-int8-*.onnx"))


@pytest.mark.parametrize("precision", ["fp16", "INT8", None])
def test_an_unknown_precision_is_refused(upstream_onnx, precision):
    with pytest.raises(InferenceError, match="precision must be one of fp32, int8"):
        make_session(upstream_onnx, 1, precision=precision)


def test_a_model_that_is_not_the_generator_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [100, 72])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [100, 72])])
    with pytest.raises(InferenceError, match="not the CGAN input 'image'"):
        build_int8(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


@pytest.mark.parametrize("value,expected", [(None, "fp32"), ("int8", "int8"), (" INT8 ", "int8"), ("fp32", "fp32")])
def test_the_default_precision_setting(monkeypatch, value, expected):
    from cgan import settings

    if value is None:
        monkeypatch.delenv("CGAN_CPU_PRECISION", raising=False)
    else:
        monkeypatch.setenv("CGAN_CPU_PRECISION", value)
    assert settings.cpu_precision() == expected


def test_a_bad_default_precision_is_named(monkeypatch):
    from cgan import settings

    monkeypatch.setenv("CGAN_CPU_PRECISION", "bf16")
    with pytest.raises(settings.ConfigError, match="CGAN_CPU_PRECISION='bf16' must be one of fp32, int8"):
        settings.cpu_precision()


def test_reduce_range_is_chosen_by_the_cpus_vnni():
    """u8s8 on x86 without VNNI saturates (ONNX Runtime's quantization docs): 7-bit weights there."""
    from cgan.runtimes.ort_int8 import reduce_range_needed, resolve_settings

    assert reduce_range_needed("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")  # AVX2 only (Zen 3)
    assert reduce_range_needed("flags\t\t: avx2 avx512f avx512bw\n")  # AVX-512 without VNNI
    assert not reduce_range_needed("flags\t\t: avx2 avx512f avx512_vnni\n")
    assert not reduce_range_needed("flags\t\t: avx2 avx_vnni\n")
    assert resolve_settings(dict(DEFAULT_SETTINGS, reduce_range=False))["reduce_range"] is False
    assert resolve_settings(DEFAULT_SETTINGS)["reduce_range"] in (True, False)
