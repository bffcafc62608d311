"""The CPU-only graph rewrite: ConvTranspose(k4, s2, p1) as four phase Convs + DepthToSpace."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cgan.recipe.bins import make_input_batch
from cgan.runtimes.onnxruntime_runner import make_session
from cgan.runtimes.ort_graph import split_conv_transposes


def _model(cin, cout, *, bias=True, activation="Relu", extra_consumer=False, opset=11, **attrs):
    rng = np.random.default_rng(cin * 100 + cout)
    attrs = {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 1, 1, 1], **attrs}
    inits = [numpy_helper.from_array(rng.standard_normal((cin, cout, 4, 4)).astype(np.float32) * 0.1, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        inputs.append("b")
    nodes = [helper.make_node("ConvTranspose", inputs, ["t" if activation else "y"], **attrs)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, cout, 10, 12])]
    if activation:
        nodes.append(helper.make_node(activation, ["t"], ["y"]))
    if extra_consumer:
        nodes.append(helper.make_node("Neg", ["t"], ["n"]))
        outputs.append(helper.make_tensor_value_info("n", TensorProto.FLOAT, [3, cout, 10, 12]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, cin, 5, 6])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


@pytest.mark.parametrize("cin, cout, bias, activation, extra", [
    (128, 64, True, "Relu", False),
    (32, 16, False, "Tanh", False),
    (16, 32, True, None, False),
    (24, 48, True, "Sigmoid", False),
    (16, 16, True, "Relu", True),  # the pre-activation output is used elsewhere: not fused
])
def test_split_computes_the_same_tensor(cin, cout, bias, activation, extra):
    model = _model(cin, cout, bias=bias, activation=activation, extra_consumer=extra)
    split, count = split_conv_transposes(model)
    assert count == 1
    onnx.checker.check_model(split)
    ops = [n.op_type for n in split.graph.node]
    assert "ConvTranspose" not in ops and ops.count("Conv") == 4 and "DepthToSpace" in ops
    if activation and not extra:
        assert ops.count(activation) == 4  # moved before the interleave, once per phase
    x = np.random.default_rng(1).standard_normal((3, cin, 5, 6)).astype(np.float32)
    for want, got in zip(_run(model, x), _run(split, x), strict=True):
        assert want.shape == got.shape == (3, cout, 10, 12)
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("cout, attrs, opset", [
    (1, {}, 11),  # few output channels and no split layer before it: left as it is
    (64, {"strides": [1, 1]}, 11),
    (64, {"pads": [0, 0, 0, 0]}, 11),
    (64, {"output_padding": [1, 1]}, 11),
    (64, {"dilations": [2, 2]}, 11),
    (64, {}, 10),  # no DepthToSpace mode attribute before opset 11
])
def test_other_conv_transposes_are_left_alone(cout, attrs, opset):
    model = _model(16, cout, opset=opset, **attrs)
    split, count = split_conv_transposes(model)
    assert count == 0 and split.graph == model.graph


def test_the_generator_is_rewritten_and_gives_the_same_images(upstream_onnx):
    split, count = split_conv_transposes(onnx.load(str(upstream_onnx)))
    assert count == 1  # 128->64 split, the final 64->1 layer computed from its phases
    ops = [n.op_type for n in split.graph.node]
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 2
    x = np.concatenate([make_input_batch(4, g) for g in range(1)])
    fast = make_session(upstream_onnx).run(None, {"image": x})[0]
    recipe = make_session(upstream_onnx, split_deconv=False).run(None, {"image": x})[0]
    np.testing.assert_allclose(fast, recipe, atol=1e-5)
    assert onnx.load(str(upstream_onnx)).graph == onnx.load(str(upstream_onnx)).graph  # file untouched


def _pair_model(c_out, *, bias=True, first_activation="Relu", last_activation="Tanh", extra=False):
    rng = np.random.default_rng(7 + c_out)
    inits = [numpy_helper.from_array(rng.standard_normal((32, 16, 4, 4)).astype(np.float32) * 0.1, "w1"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "b1"),
             numpy_helper.from_array(rng.standard_normal((16, c_out, 4, 4)).astype(np.float32) * 0.2, "w2")]
    second = ["h", "w2"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "b2"))
        second.append("b2")
    k = {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["t1" if first_activation else "h"], **k)]
    if first_activation:
        nodes.append(helper.make_node(first_activation, ["t1"], ["h"]))
    nodes.append(helper.make_node("ConvTranspose", second, ["t2" if last_activation else "y"], **k))
    if last_activation:
        nodes.append(helper.make_node(last_activation, ["t2"], ["y"]))
    shape = [2, c_out, 20, 24]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    if extra:  # the middle tensor is also a graph output: no pairing
        outputs.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 16, 10, 12]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 32, 5, 6])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)


@pytest.mark.parametrize("c_out, bias, first, last, extra, paired", [
    (1, True, "Relu", "Tanh", False, True),
    (3, False, "Relu", "Sigmoid", False, True),
    (1, True, None, None, False, True),
    (3, True, "Relu", "Tanh", True, False),
])
def test_a_small_layer_after_a_split_one_is_computed_from_its_phases(c_out, bias, first, last, extra, paired):
    model = _pair_model(c_out, bias=bias, first_activation=first, last_activation=last, extra=extra)
    split, count = split_conv_transposes(model)
    onnx.checker.check_model(split)
    ops = [n.op_type for n in split.graph.node]
    assert count == 1
    assert ops.count("ConvTranspose") == (0 if paired else 1)
    assert ops.count("DepthToSpace") == (2 if paired else 1)
    x = np.random.default_rng(3).standard_normal((2, 32, 5, 6)).astype(np.float32)
    for want, got in zip(_run(model, x), _run(split, x), strict=True):
        np.testing.assert_allclose(got, want, atol=3e-5, rtol=1e-5)


@pytest.mark.parametrize("value, machine, expected", [
    ("on", "aarch64", True), ("off", "x86_64", False), ("auto", "x86_64", True), ("auto", "aarch64", False),
    (None, "AMD64", True),
])
def test_the_rewrite_setting(monkeypatch, value, machine, expected):
    import platform

    from cgan import settings

    if value is None:
        monkeypatch.delenv("CGAN_ORT_SPLIT_DECONV", raising=False)
    else:
        monkeypatch.setenv("CGAN_ORT_SPLIT_DECONV", value)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert settings.ort_split_deconv() is expected


def test_a_bad_rewrite_setting_is_named(monkeypatch):
    from cgan import settings

    monkeypatch.setenv("CGAN_ORT_SPLIT_DECONV", "sometimes")
    with pytest.raises(settings.ConfigError, match="CGAN_ORT_SPLIT_DECONV='sometimes' must be auto, on or off"):
        settings.ort_split_deconv()


@pytest.mark.parametrize("value, rewrites", [("on", 1), ("off", 0)])
def test_sessions_follow_the_setting(monkeypatch, upstream_onnx, value, rewrites):
    import cgan.runtimes.ort_graph as ort_graph

    calls = []
    real = ort_graph.split_conv_transposes
    monkeypatch.setattr(ort_graph, "split_conv_transposes", lambda m: calls.append(1) or real(m))
    from cgan import settings

    monkeypatch.setenv("CGAN_ORT_SPLIT_DECONV", value)
    make_session(upstream_onnx, split_deconv=settings.ort_split_deconv())
    assert len(calls) == rewrites


@pytest.mark.parametrize("per_phase_taps", [True, False])
def test_both_tap_layouts_compute_the_same_tensor(per_phase_taps):
    model = _pair_model(3)
    split, _ = split_conv_transposes(model, per_phase_taps=per_phase_taps)
    onnx.checker.check_model(split)
    tap_convs = [n for n in split.graph.node if n.name.endswith("_taps")]
    groups = [a.i for n in tap_convs for a in n.attribute if a.name == "group"]
    assert (len(tap_convs), groups) == ((4, []) if per_phase_taps else (1, [4]))
    x = np.random.default_rng(5).standard_normal((2, 32, 5, 6)).astype(np.float32)
    for want, got in zip(_run(model, x), _run(split, x), strict=True):
        np.testing.assert_allclose(got, want, atol=3e-5, rtol=1e-5)
