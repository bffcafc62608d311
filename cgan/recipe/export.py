"""PyTorch generator -> ONNX (input `image` [B, 72], output `output1` [B, C, 28, 28]) -> onnxsim.

Uses the TorchScript exporter at opset 11 by default: the recipe's opset, which every atc
since CANN 5.x parses (newer opsets can hit E19010 on older toolkits). The export is checked:
ONNX Runtime must reproduce PyTorch's output on a seeded batch within `tolerance`. The
BatchNorm layers are folded into the Gemm/ConvTranspose before them (`fold_batchnorm`), so the
graph holds 4 weight layers, 3 ReLU and a Tanh; the check compares against the unfolded model.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from cgan.errors import ExportError
from cgan.layout.tensors import INPUT_DIM, INPUT_NAME, OUTPUT_NAME, SAMPLES_PER_GRID

DEFAULT_OPSET = 11
DEFAULT_BATCH = SAMPLES_PER_GRID
MAX_BATCH = 64 * SAMPLES_PER_GRID
DEFAULT_TOLERANCE = 1e-4
CHECK_SEED = 20211113


@dataclass
class ExportResult:
    onnx_path: str
    channels: int
    batch: int
    opset: int
    simplified: bool
    max_abs_err: float
    sha256: str
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def validate_batch(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch % SAMPLES_PER_GRID or not (
        SAMPLES_PER_GRID <= batch <= MAX_BATCH
    ):
        raise ExportError(
            f"batch must be a multiple of {SAMPLES_PER_GRID} (one grid = {SAMPLES_PER_GRID} rows) "
            f"between {SAMPLES_PER_GRID} and {MAX_BATCH}, got {batch!r}"
        )
    return batch


def seeded_check_batch(batch: int):
    import numpy as np

    from cgan.recipe.bins import make_input_batch

    return np.concatenate([make_input_batch(CHECK_SEED, g) for g in range(batch // SAMPLES_PER_GRID)])


def export_onnx(
    checkpoint: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    batch: int = DEFAULT_BATCH,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportResult:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    from cgan.recipe.checkpoint import load_generator
    from cgan.recipe.model import fold_batchnorm
    from cgan.storage.files import atomic_write_bytes, sha256_file

    validate_batch(batch)
    if not isinstance(opset, int) or not 11 <= opset <= 20:
        raise ExportError(f"opset must be an integer in 11..20, got {opset!r}")
    start = time.perf_counter()
    model = load_generator(checkpoint)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    raw_path = out_path.with_name(f".{out_path.name}.raw.part")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                fold_batchnorm(model), (torch.zeros(batch, INPUT_DIM),), str(raw_path),
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                opset_version=opset, do_constant_folding=True, dynamo=False,
            )
        graph = onnx.load(str(raw_path))
    except Exception as exc:
        raise ExportError(f"ONNX export of {checkpoint} failed: {exc}") from exc
    finally:
        raw_path.unlink(missing_ok=True)
    simplified = False
    if simplify:
        import onnxsim

        graph, simplified = onnxsim.simplify(graph)
        if not simplified:
            raise ExportError("onnxsim could not validate the simplified model; retry with --no-simplify")
    onnx.checker.check_model(graph)
    atomic_write_bytes(out_path, graph.SerializeToString())

    check = seeded_check_batch(batch)
    with torch.no_grad():
        expected = model(torch.from_numpy(check)).numpy()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(out_path), opts, providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: check})[0]
    max_err = float(np.max(np.abs(got - expected)))
    if not max_err <= tolerance:
        out_path.unlink(missing_ok=True)
        raise ExportError(
            f"ONNX Runtime differs from PyTorch by {max_err:.3g} (> {tolerance:g}) on the seeded "
            "check batch; the exported model was removed"
        )
    return ExportResult(
        onnx_path=str(out_path), channels=model.output_dim, batch=batch, opset=opset,
        simplified=simplified, max_abs_err=max_err, sha256=sha256_file(out_path),
        seconds=round(time.perf_counter() - start, 2),
    )
