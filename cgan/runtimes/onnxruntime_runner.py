"""ONNX Runtime on the CPU: the `cpu` target of the DAG and the recipe's stand-in for msame."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from cgan.errors import InferenceError
from cgan.layout.tensors import INPUT_DIM, INPUT_NAME, SAMPLES_PER_GRID
from cgan.recipe.bins import BinsPack
from cgan.runtimes.folder_runner import InferenceRun, OnOutput, Progress, run_folder


def make_session(model_path: str | os.PathLike, threads: int = 1, *, split_deconv: bool | None = None,
                 precision: str = "fp32", int8_cache: str | os.PathLike | None = None, on_build=None):
    """An ONNX Runtime CPU session; `split_deconv` loads the graph with its 128->64 style
    ConvTransposes as phase Convs (cgan.runtimes.ort_graph; same outputs, faster on x86-64).
    None: where it is faster (x86-64; the CGAN_ORT_SPLIT_DECONV setting is the caller's).
    precision int8: the cached int8 model of that graph (cgan.runtimes.ort_int8, built on first use in `int8_cache`)."""
    import onnxruntime as ort

    from cgan.runtimes.ort_graph import split_pays_off
    from cgan.runtimes.ort_int8 import check_precision, int8_model

    if split_deconv is None:
        split_deconv = split_pays_off()
    check_precision(precision)

    if not isinstance(threads, int) or threads < 0:
        raise InferenceError(f"threads must be a non-negative integer (0 = all cores), got {threads!r}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise InferenceError(f"ONNX model {model_path} not found; create it with `cgan export`")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if precision == "int8":
        model_path = int8_model(model_path, split_deconv=split_deconv, cache_dir=int8_cache, on_build=on_build)
        split_deconv = False  # already in the int8 graph
    try:
        source = str(model_path)
        if split_deconv:
            import onnx

            from cgan.runtimes.ort_graph import split_conv_transposes

            graph, rewritten = split_conv_transposes(onnx.load(source))
            if rewritten:
                source = graph.SerializeToString()
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InferenceError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc


def model_batch(session) -> int:
    """Rows per call from the model's input: [B, 72] with B a multiple of 100 (or dynamic)."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(inputs[0].shape) != 2:
        got = [(i.name, i.shape) for i in inputs]
        raise InferenceError(f"model inputs {got} are not the CGAN input '{INPUT_NAME}' [B, {INPUT_DIM}]")
    rows, cols = inputs[0].shape
    if cols != INPUT_DIM:
        raise InferenceError(f"model input has {cols} columns, expected {INPUT_DIM}")
    return rows if isinstance(rows, int) else SAMPLES_PER_GRID


def run_onnxruntime(
    model_path: str | os.PathLike,
    input_dir: str | os.PathLike | BinsPack,
    output_root: str | os.PathLike,
    *,
    threads: int = 1,
    warmup: int = 1,
    progress: Progress | None = None,
    on_output: OnOutput | None = None,
    precision: str = "fp32",
    int8_cache: str | os.PathLike | None = None,
    write_stems: Collection[str] | None = None,
    split_deconv: bool | None = None,
) -> InferenceRun:
    """Every bin of input_dir (a folder, or a shard's BinsPack read in place) through ONNX Runtime
    at `precision` (fp32 or int8, see make_session); `write_stems`: whose raw outputs are written
    (None: all; see run_folder)."""
    import onnxruntime as ort

    session = make_session(model_path, threads, precision=precision, int8_cache=int8_cache,
                           split_deconv=split_deconv)
    batch = model_batch(session)
    if batch % SAMPLES_PER_GRID:
        raise InferenceError(f"model batch {batch} is not a multiple of {SAMPLES_PER_GRID}")

    def execute(x):
        return session.run(None, {INPUT_NAME: x})[0]

    return run_folder(
        execute, batch=batch, input_dir=input_dir, output_root=output_root,
        backend="onnxruntime", device="cpu", threads=threads, warmup=warmup, progress=progress,
        tool={"onnxruntime": ort.__version__, "model": str(model_path), "precision": precision},
        on_output=on_output, write_stems=write_stems,
    )
