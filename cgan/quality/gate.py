"""The quality gate: a run is accepted only when its quality report meets every threshold.

Metrics (from quality.json, cgan.quality.report / cgan.run.postprocess):

- label_accuracy >= min_label_accuracy (default 0.90): the classifier reads the digit each
  column asks for.
- min_class_accuracy >= min_class_accuracy (default 0.75): no single digit may be broken while
  the others carry the mean.
- parity_max_abs_err <= the tolerance of the run's precision (PARITY_TOLERANCE): fp32 runtimes
  (ONNX Runtime on cpu, atc must_keep_origin_dtype / force_fp32) must match PyTorch fp32
  closely; fp16 and bf16 modes on the NPU get tolerances measured by running the generator in
  that precision (docs/reliability.md has the numbers).
- feature_diversity >= min_diversity (default 0.5): per digit, the spread of the classifier's
  penultimate features over the generated digits, relative to the spread over held-out real
  digits (models/mnist_reference_features.json); the worst digit counts. A generator collapsed
  to one style per digit scores 0 even when every digit is readable. (A Frechet distance of the
  same features was measured first and did not separate a collapsed generator: it scored
  better than the healthy one; see docs/reliability.md.)

Thresholds come from settings (CGAN_GATE_*, cgan.settings) and can be overridden per run
(the form's Advanced section: gate_min_label_accuracy, ...).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cgan.errors import CganError
from cgan.paths import MODELS_DIR
from cgan.quality.classifier import DEFAULT_CLASSIFIER

REFERENCE_FEATURES = MODELS_DIR / "mnist_reference_features.json"
FEATURE_OUTPUT = "/head/head.3/Relu_output_0"  # the classifier's penultimate layer (128 features)

# Max |runtime - PyTorch fp32| per precision, from measurement (scripts/measure_parity.py;
# docs/reliability.md): fp32 runtimes; fp16 compute measured 0.023 over 3,200 digits, bf16 0.17.
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 0.05
BF16_TOLERANCE = 0.35
PARITY_TOLERANCE = {
    "force_fp32": FP32_TOLERANCE, "must_keep_origin_dtype": FP32_TOLERANCE,
    "force_fp16": FP16_TOLERANCE, "allow_fp32_to_fp16": FP16_TOLERANCE, "cube_fp16in_fp32out": FP16_TOLERANCE,
    "allow_mix_precision": FP16_TOLERANCE, "allow_mix_precision_fp16": FP16_TOLERANCE,
    "allow_mix_precision_bf16": BF16_TOLERANCE, "allow_fp32_to_bf16": BF16_TOLERANCE,
}
THRESHOLD_PARAMS = ("gate_min_label_accuracy", "gate_min_class_accuracy", "gate_min_diversity")


class QualityGateFailed(CganError):
    """The run's quality report missed at least one threshold (the message names each)."""

    retryable = False  # the same outputs get the same verdict on every try


class ThresholdError(CganError, ValueError):
    """A gate threshold is not a number in 0..1, or a precision has no parity tolerance (a ValueError too,
    so callers that check a value's form catch it)."""

    retryable = False


@dataclass(frozen=True)
class Thresholds:
    min_label_accuracy: float = 0.90
    min_class_accuracy: float = 0.75
    min_diversity: float = 0.5

    def as_dict(self) -> dict:
        return asdict(self)


def check_threshold(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1 or math.isnan(value):
        raise ThresholdError(f"{name} must be a number in 0..1 (a fraction such as 0.9), got {value!r}")
    return float(value)


def thresholds(defaults: Thresholds, overrides: dict | None = None) -> Thresholds:
    """defaults with the run's gate_* parameters (None: keep the default) applied and checked."""
    values = defaults.as_dict()
    for param in THRESHOLD_PARAMS:
        value = (overrides or {}).get(param)
        if value is not None:
            values[param.removeprefix("gate_")] = check_threshold(param, value)
    return Thresholds(**values)


def parity_tolerance(target: str, precision_mode: str, cpu_precision: str | None = None) -> float:
    """The parity tolerance of a run: on cpu by the ONNX Runtime precision (fp32; int8: its own
    bound, cgan.quality.report.PARITY_LIMITS), on ascend by the atc precision mode."""
    if target != "ascend":
        if cpu_precision == "int8":
            from cgan.quality.report import PARITY_LIMITS

            return PARITY_LIMITS["int8"]["max_abs"]
        return FP32_TOLERANCE
    if precision_mode not in PARITY_TOLERANCE:
        raise ThresholdError(f"no parity tolerance for precision_mode {precision_mode!r}; known: "
                             f"{', '.join(PARITY_TOLERANCE)}: run with one of these, or measure the mode's "
                             "tolerance (docs/reliability.md) and add it to PARITY_TOLERANCE")
    return PARITY_TOLERANCE[precision_mode]


class FeatureExtractor:
    """The committed classifier with its penultimate layer exposed as a second output."""

    def __init__(self, path: str | Path = DEFAULT_CLASSIFIER):
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(path))
        model.graph.output.append(onnx.helper.make_tensor_value_info(FEATURE_OUTPUT, onnx.TensorProto.FLOAT, None))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self._session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def features(self, digits: np.ndarray) -> np.ndarray:
        """digits [N, C, 28, 28] in [-1, 1] -> [N, 128]."""
        gray = digits.mean(axis=1, keepdims=True, dtype=np.float32) if digits.shape[1] != 1 else digits
        return self._session.run([FEATURE_OUTPUT], {"digits": np.ascontiguousarray(gray, dtype=np.float32)})[0]


def class_spread(features: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per digit: the total variance (trace of the covariance) of its features."""
    return [float(features[labels == d].var(axis=0).sum()) for d in range(10)]


def load_reference(path: str | Path = REFERENCE_FEATURES) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference feature statistics {path} not found; "
                                "scripts/reference_features.py makes them")
    return json.loads(path.read_text())


def diversity(features: np.ndarray, labels: np.ndarray, reference: dict) -> dict:
    """feature_diversity (worst digit) and its per-digit values: sqrt(generated / real spread)."""
    real = reference["class_spread"]
    per_class = [math.sqrt(g / r) for g, r in zip(class_spread(features, labels), real, strict=True)]
    return {"feature_diversity": round(min(per_class), 4),
            "per_class_diversity": {str(d): round(v, 4) for d, v in enumerate(per_class)}}


def evaluate(report: dict, limits: Thresholds, *, target: str, precision_mode: str) -> dict:
    """The gate's verdict on a quality report: every check with its value and threshold."""
    per_class = report.get("per_class_accuracy") or {}
    worst = min(per_class.items(), key=lambda kv: kv[1]) if per_class else ("-", 0.0)
    cpu_precision = report.get("precision") or "fp32"
    checks = [
        _check("label_accuracy", report["label_accuracy"], ">=", limits.min_label_accuracy),
        _check(f"class_accuracy (digit {worst[0]}, the worst)", worst[1], ">=", limits.min_class_accuracy),
        _check(f"parity_max_abs_err ({target}, {precision_mode if target == 'ascend' else cpu_precision})",
               report["parity_max_abs_err"], "<=", parity_tolerance(target, precision_mode, cpu_precision)),
    ]
    if "feature_diversity" in report:
        checks.append(_check("feature_diversity (worst digit)", report["feature_diversity"], ">=",
                             limits.min_diversity))
    else:
        checks.append({"metric": "feature_diversity", "value": None, "op": ">=", "threshold": limits.min_diversity,
                       "passed": False, "why": "not measured (no parity sample)"})
    return {"passed": all(c["passed"] for c in checks), "status": "accepted" if all(c["passed"] for c in checks)
            else "rejected", "checks": checks, "thresholds": limits.as_dict()}


def _check(metric: str, value: float, op: str, threshold: float) -> dict:
    passed = value >= threshold if op == ">=" else value <= threshold
    return {"metric": metric, "value": value, "op": op, "threshold": threshold, "passed": bool(passed)}


def failures(verdict: dict) -> list[str]:
    """One line per failed check: metric, value, threshold."""
    return [f"{c['metric']} = {c['value']} (needs {c['op']} {c['threshold']})"
            + (f": {c['why']}" if c.get("why") else "") for c in verdict["checks"] if not c["passed"]]



def check_lines(verdict: dict) -> list[str]:
    """One line per check, passed or not: metric, value, threshold (for the task log)."""
    lines = []
    for c in verdict["checks"]:
        value = "not measured" if c["value"] is None else f"{c['value']:.4g}"
        lines.append(f"{'passed' if c['passed'] else 'FAILED'}: {c['metric']} = {value} "
                     f"(needs {c['op']} {c['threshold']})" + (f": {c['why']}" if c.get("why") else ""))
    return lines
