"""int8 on the CPU: ONNX Runtime static quantization of the graph as ONNX Runtime runs it.

The exported ONNX (the recipe's model, also what atc converts) is never changed. Its int8
variant is built from the graph after the phase split (cgan.runtimes.ort_graph: ONNX Runtime
has int8 Conv kernels but no int8 ConvTranspose), in QDQ format with per-channel int8 weights
and uint8 activations, calibrated (MinMax) on seeded input batches of the recipe's layout.
The output tail, from the last Conv/Gemm to the graph output (the generator's final
overlap-add Conv and Tanh), stays in fp32: it is a few percent of the work and most of the
pixel error. Measured choices and numbers: docs/performance.md.

Built once per (ONNX sha256, settings, ONNX Runtime version) and kept in a local cache folder
as `cgan-int8-<key>.onnx` (written atomically; the key is also stored in the model and
checked when it is loaded).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from cgan.errors import InferenceError
from cgan.storage.files import atomic_write_bytes, sha256_file

PRECISIONS = ("fp32", "int8")
RECIPE_VERSION = 1  # bump when build_int8 changes what it makes from the same settings
MIN_QDQ_OPSET = 13  # per-channel DequantizeLinear (axis attribute)
COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
KEY_PROP = "cgan_int8_key"
CALIBRATION_SEED = 20_240_917  # any fixed seed; not a run's seed, so every run shares one model

DEFAULT_SETTINGS = {
    "format": "QDQ",  # QOperator measured no faster on this graph
    "activations": "QUInt8",  # u8s8: the x86 VNNI/AMX kernels
    "weights": "QInt8",
    "per_channel": True,
    "per_phase_taps": False,  # one grouped tap Conv, one scale (cgan.runtimes.ort_graph)
    "also_quantize": ["DepthToSpace"],  # the tap interleave moves uint8, not float (-0.2 ms a call)
    "calibration": {"method": "MinMax", "grids": 16, "seed": CALIBRATION_SEED},
    "fp32_output_tail": True,
    # 7-bit weights: None = decided by the CPU (reduce_range_needed). ONNX Runtime's u8s8 kernels on
    # x86 without VNNI (AVX2 / AVX-512 only, e.g. AMD Zen 3) multiply with VPMADDUBSW, which
    # saturates; its docs' fix is reduce_range. Measured on a Zen 3 EPYC, 32 grids: max pixel error
    # vs fp32 0.62 without, 0.25 with (Intel with VNNI: 0.26 without).
    "reduce_range": None,
}


def reduce_range_needed(cpuinfo: str | None = None) -> bool:
    """True unless this x86 CPU has VNNI (avx512_vnni or avx_vnni in /proc/cpuinfo's flags); on a
    CPU whose flags cannot be read, True (the setting that is right everywhere)."""
    import platform

    if cpuinfo is None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return False  # the saturation is an x86 VPMADDUBSW matter
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return True
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return not ({"avx512_vnni", "avx_vnni"} & flags)


def resolve_settings(settings: dict) -> dict:
    """settings with `reduce_range` decided for this CPU where it is None."""
    if settings.get("reduce_range") is None:
        return dict(settings, reduce_range=reduce_range_needed())
    return settings


def check_precision(precision) -> str:
    if precision not in PRECISIONS:
        raise InferenceError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def cache_key(onnx_sha256: str, settings: dict, split_deconv: bool) -> str:
    """sha256 of everything the int8 model depends on."""
    import onnxruntime

    material = {"onnx_sha256": onnx_sha256, "settings": settings, "split_deconv": bool(split_deconv),
                "onnxruntime": onnxruntime.__version__, "recipe": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def output_tail(model) -> list[str]:
    """Names of the nodes from the last Conv/Gemm/MatMul to the graph's output (inclusive)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    tail, seen = [], set()
    frontier = [o.name for o in model.graph.output]
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        tail.append(node.name)
        if node.op_type not in COMPUTE_OPS:
            frontier.extend(i for i in node.input if i in producers)
    return tail


class _SeededBatches:
    """CalibrationDataReader over `grids` seeded input batches, concatenated to the model's batch."""

    def __init__(self, input_name: str, batch: int, grids: int, seed: int):
        import numpy as np

        from cgan.layout.tensors import SAMPLES_PER_GRID
        from cgan.recipe.bins import make_input_batch

        per_call = max(1, batch // SAMPLES_PER_GRID)
        calls = max(1, grids // per_call)
        self._feeds = iter([
            {input_name: np.concatenate([make_input_batch(seed, c * per_call + i) for i in range(per_call)])}
            for c in range(calls)
        ])

    def get_next(self):
        return next(self._feeds, None)


def build_int8(model, settings: dict = DEFAULT_SETTINGS, *, split_deconv: bool = True):
    """The int8 ModelProto of an fp32 CGAN generator ModelProto (the input is not changed)."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry

    from cgan.layout.tensors import INPUT_NAME, SAMPLES_PER_GRID
    from cgan.runtimes.ort_graph import split_conv_transposes

    settings = resolve_settings(settings)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_QDQ_OPSET:
        model = version_converter.convert_version(model, MIN_QDQ_OPSET)
    if split_deconv:
        model, _ = split_conv_transposes(model, per_phase_taps=settings.get("per_phase_taps", False))
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise InferenceError(f"cannot quantize: model inputs {[i.name for i in inputs]} are not the CGAN "
                             f"input '{INPUT_NAME}'")
    dim = inputs[0].type.tensor_type.shape.dim[0]
    batch = dim.dim_value if dim.HasField("dim_value") else SAMPLES_PER_GRID
    calib = settings["calibration"]
    reader = _SeededBatches(INPUT_NAME, batch, calib["grids"], calib["seed"])
    exclude = output_tail(model) if settings["fp32_output_tail"] else []
    with tempfile.TemporaryDirectory(prefix="cgan-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            model, out, reader, quant_format=getattr(QuantFormat, settings["format"]),
            activation_type=getattr(QuantType, settings["activations"]),
            weight_type=getattr(QuantType, settings["weights"]), per_channel=settings["per_channel"],
            calibrate_method=getattr(CalibrationMethod, calib["method"]), nodes_to_exclude=exclude,
            op_types_to_quantize=sorted(set(QDQRegistry) | set(settings.get("also_quantize", []))),
            reduce_range=bool(settings["reduce_range"]),
        )
        return onnx.load(out)


def default_cache_dir() -> Path:
    """CGAN_INT8_CACHE, else $XDG_CACHE_HOME/cgan/int8 (~/.cache/cgan/int8)."""
    raw = os.environ.get("CGAN_INT8_CACHE")
    if raw:
        return Path(raw).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cgan" / "int8"


def int8_model(onnx_path: str | os.PathLike, *, split_deconv: bool = True, cache_dir: str | os.PathLike | None = None,
               settings: dict = DEFAULT_SETTINGS, on_build=None) -> Path:
    """The cached int8 model of `onnx_path`, built on first use; `on_build(key)` is told of a build."""
    import onnx

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InferenceError(f"ONNX model {onnx_path} not found; create it with `cgan export`")
    settings = resolve_settings(settings)  # the key names the CPU's choice: an x86 model of each kind
    key = cache_key(sha256_file(onnx_path), settings, split_deconv)
    path = Path(cache_dir or default_cache_dir()) / f"cgan-int8-{key[:32]}.onnx"
    if path.is_file() and _stored_key(path) == key:
        return path
    if on_build is not None:
        on_build(key)
    try:
        model = build_int8(onnx.load(onnx_path), settings, split_deconv=split_deconv)
    except InferenceError:
        raise
    except Exception as exc:
        raise InferenceError(f"cannot build the int8 model of {onnx_path}: {exc}") from exc
    model.metadata_props.add(key=KEY_PROP, value=key)
    return atomic_write_bytes(path, model.SerializeToString())


def _stored_key(path: Path) -> str | None:
    """The key recorded in a cached model (None when the file is not a readable model)."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:
        return None
    return next((p.value for p in model.metadata_props if p.key == KEY_PROP), None)
