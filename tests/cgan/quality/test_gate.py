"""The quality gate (cgan.quality.gate) and its verdict through postprocess, on real ONNX Runtime outputs."""

import json

import numpy as np
import pytest

from cgan.quality.gate import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    ThresholdError,
    Thresholds,
    evaluate,
    failures,
    parity_tolerance,
    thresholds,
)
from cgan.run.plan import ParamError, validate
from cgan.run.postprocess import postprocess_run
from tests.cgan.quality.gate_models import broken_checkpoint
from tests.workspaces import make_workspace

GOOD = {"label_accuracy": 0.97, "per_class_accuracy": {str(d): 0.97 for d in range(10)},
        "parity_max_abs_err": 2e-6, "feature_diversity": 0.85}


def test_a_good_report_passes_and_each_miss_is_named_with_value_and_threshold():
    assert evaluate(GOOD, Thresholds(), target="cpu", precision_mode="force_fp16")["status"] == "accepted"
    bad = dict(GOOD, label_accuracy=0.5, per_class_accuracy=dict(GOOD["per_class_accuracy"], **{"7": 0.1}),
               feature_diversity=0.0)
    verdict = evaluate(bad, Thresholds(), target="cpu", precision_mode="force_fp16")
    assert verdict["status"] == "rejected"
    assert failures(verdict) == ["label_accuracy = 0.5 (needs >= 0.9)",
                                 "class_accuracy (digit 7, the worst) = 0.1 (needs >= 0.75)",
                                 "feature_diversity (worst digit) = 0.0 (needs >= 0.5)"]


def test_parity_tolerance_follows_the_precision():
    assert parity_tolerance("cpu", "force_fp16") == FP32_TOLERANCE  # ONNX Runtime runs fp32
    assert parity_tolerance("ascend", "must_keep_origin_dtype") == FP32_TOLERANCE
    assert parity_tolerance("ascend", "force_fp16") == FP16_TOLERANCE
    assert parity_tolerance("ascend", "allow_fp32_to_fp16") == FP16_TOLERANCE
    fp16_err = dict(GOOD, parity_max_abs_err=0.02)  # fp16 compute measured 0.023 max
    assert evaluate(fp16_err, Thresholds(), target="ascend", precision_mode="force_fp16")["passed"]
    assert failures(evaluate(fp16_err, Thresholds(), target="ascend", precision_mode="force_fp32")) == [
        "parity_max_abs_err (ascend, force_fp32) = 0.02 (needs <= 0.0001)"]
    with pytest.raises(ValueError, match="no parity tolerance for precision_mode 'fast'"):
        parity_tolerance("ascend", "fast")


def test_thresholds_are_overridden_per_run_and_checked():
    limits = thresholds(Thresholds(), {"gate_min_label_accuracy": 0.5, "gate_min_diversity": None})
    assert limits == Thresholds(min_label_accuracy=0.5)
    assert validate({"gate_min_class_accuracy": 0.2}).gate_min_class_accuracy == 0.2
    for bad in (1.5, -0.1, "0.9", True):
        with pytest.raises(ParamError, match="gate_min_label_accuracy must be a number in 0..1"):
            validate({"gate_min_label_accuracy": bad})
    with pytest.raises(ThresholdError, match=r"gate_min_diversity must be a number in 0..1 \(a fraction such as 0.9\)"):
        thresholds(Thresholds(), {"gate_min_diversity": 2})  # postprocess, given the run's params


def _workspace(tmp_path, checkpoint, grids=3):
    """A workspace as the inference tasks leave it, the outputs made by ONNX Runtime from checkpoint."""
    from cgan.recipe.export import export_onnx

    onnx_path = export_onnx(checkpoint, tmp_path / "g.onnx").onnx_path
    return make_workspace(tmp_path / "ws", onnx_path, checkpoint, grids=grids, per_shard=grids, seed=11,
                          postprocess=False)


def test_the_committed_generator_passes_the_gate(tmp_path, committed_generator):
    store, shards = _workspace(tmp_path, committed_generator)
    summary = postprocess_run(store, shards, committed_generator)
    quality = json.loads(store.get_bytes("quality/quality.json"))
    assert summary["gate"] == "accepted", summary["gate_failures"]
    assert quality["gate"]["status"] == "accepted" and quality["feature_diversity"] >= 0.5


@pytest.mark.parametrize(("how", "metric"), [("permuted", "label_accuracy"), ("collapsed", "feature_diversity")])
def test_a_broken_generator_is_rejected_naming_the_metric(tmp_path, committed_generator, how, metric):
    checkpoint = broken_checkpoint(committed_generator, tmp_path / f"{how}.pth", how)
    store, shards = _workspace(tmp_path, checkpoint)
    summary = postprocess_run(store, shards, checkpoint)
    assert summary["gate"] == "rejected"
    assert any(line.startswith(metric) for line in summary["gate_failures"]), summary["gate_failures"]
    assert json.loads(store.get_bytes("quality/quality.json"))["gate"]["status"] == "rejected"
    if how == "collapsed":  # every digit readable, yet the gate catches it
        assert summary["label_accuracy"] >= 0.9 and summary["feature_diversity"] == 0.0


def test_fp16_rounded_outputs_pass_fp16_modes_and_fail_fp32_ones(tmp_path, committed_generator):
    """Outputs with fp16 rounding (what an om built with force_fp16 returns) against each tolerance."""
    from cgan.recipe.outputs import read_output_bin

    store, shards = _workspace(tmp_path, committed_generator)
    for key in [k for k in store.list("outputs") if k.endswith(".bin")]:
        path = store.path(key)
        read_output_bin(path).astype(np.float16).astype("<f4").tofile(path)
    fp16 = postprocess_run(store, shards, committed_generator, target="ascend", precision_mode="force_fp16")
    assert fp16["gate"] == "accepted" and FP32_TOLERANCE < fp16["parity_max_abs_err"] <= FP16_TOLERANCE
    fp32 = postprocess_run(store, shards, committed_generator, target="ascend", precision_mode="must_keep_origin_dtype")
    assert fp32["gate"] == "rejected" and fp32["gate_failures"][0].startswith(
        "parity_max_abs_err (ascend, must_keep_origin_dtype)")


def test_an_int8_cpu_run_is_held_to_the_int8_parity_bound_not_fp32s():
    from cgan.quality.gate import FP32_TOLERANCE, parity_tolerance
    from cgan.quality.report import PARITY_LIMITS

    assert parity_tolerance("cpu", "force_fp16") == FP32_TOLERANCE
    assert parity_tolerance("cpu", "force_fp16", "fp32") == FP32_TOLERANCE
    assert parity_tolerance("cpu", "force_fp16", "int8") == PARITY_LIMITS["int8"]["max_abs"]


def test_check_lines_give_every_check_with_its_value_and_threshold():
    from cgan.quality.gate import check_lines

    verdict = {"checks": [
        {"metric": "label_accuracy", "value": 0.987654, "op": ">=", "threshold": 0.9, "passed": True},
        {"metric": "feature_diversity", "value": None, "op": ">=", "threshold": 0.5, "passed": False,
         "why": "not measured (no parity sample)"},
    ]}
    assert check_lines(verdict) == [
        "passed: label_accuracy = 0.9877 (needs >= 0.9)",
        "FAILED: feature_diversity = not measured (needs >= 0.5): not measured (no parity sample)",
    ]
