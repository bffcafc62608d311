"""`make bench`, peers section: every CPU runtime on the same generator, side by side in one run.

    .venv/bin/python scripts/bench_peers.py [--threads 2] [--rounds 8] [--grids 30]

Rows: ONNX Runtime fp32 on the recipe's graph and on the phase-split graph (the project's
default), ONNX Runtime int8 (cgan.runtimes.ort_int8), OpenVINO at f32 and at its own default
precision (bf16 where the CPU has it), torch.compile (inductor) and PyTorch eager. Each runs
batch 100 (one grid per call); rounds interleave the runtimes (a block of calls each), so load
from other processes on a shared machine falls on all of them alike. Each row also carries the
label accuracy of its own outputs on `grids` seeded grids and its pixel error against ONNX
Runtime fp32. The int8 GEMM ceiling (ONNX Runtime MatMulInteger, u8 x s8, 2048^3, constant B
as the model's weights are) is measured in the same run. Peers that are not installed
(openvino: requirements-bench.lock, installed by `make bench`) are listed as skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHECKPOINT = REPO / "models" / "cgan_generator.pth"
ACCURACY_SEED = 2026
TIMING_SEED = 7

Runner = Callable[[Any], Any]  # [100, 72] float32 -> [100, C, 28, 28] float32 (numpy)


def int8_gemm_ceiling(threads: int, n: int = 2048, reps: int = 5, clock=time.perf_counter) -> dict:
    """GOP/s of ONNX Runtime's u8 x s8 MatMulInteger at n^3 (B constant and B fed each call);
    clock time.thread_time at 1 thread: CPU time, which other processes' load hardly moves."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    b = rng.integers(-128, 128, (n, n), dtype=np.int8)
    out = {}
    for name, const in (("const_b", True), ("fed_b", False)):
        inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])]
        if not const:
            inputs.append(helper.make_tensor_value_info("b", TensorProto.INT8, [n, n]))
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "mmi", inputs,
                                  [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
                                  [numpy_helper.from_array(b, "b")] if const else [])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds = {"a": a} if const else {"a": a, "b": b}
        sess.run(None, feeds)
        times = []
        for _ in range(reps):
            t0 = clock()
            sess.run(None, feeds)
            times.append(clock() - t0)
        out[f"{name}_gops"] = round(2 * n ** 3 / min(times) / 1e9, 1)
    out["ceiling_gops"] = max(out.values())
    return out


def node_profile(model_path: Path, calls: int = 40) -> list[dict]:
    """Per-node kernel time of an ONNX model in ONNX Runtime at 1 thread, as ONNX Runtime runs it
    (after its own fusions): the fastest of `calls` calls per node (robust to other processes'
    load), slowest node first."""
    import onnxruntime as ort

    from cgan.layout.tensors import INPUT_NAME
    from cgan.recipe.bins import make_input_batch

    with tempfile.TemporaryDirectory(prefix="cgan-profile-") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        x = make_input_batch(TIMING_SEED, 0)
        for _ in range(calls):
            sess.run(None, {INPUT_NAME: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node.setdefault((e["args"]["op_name"], e["name"][: -len("_kernel_time")]), []).append(e["dur"] / 1000)
    rows = [{"op": op, "node": node, "ms": round(min(v), 3)} for (op, node), v in per_node.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def make_runners(onnx_path: Path, threads: int, int8_cache: Path) -> tuple[dict[str, Runner], dict[str, str]]:
    """name -> runner for every peer that can run here, and name -> why for those that cannot."""
    runners: dict[str, Runner] = {}
    skipped: dict[str, str] = {}

    from cgan.layout.tensors import INPUT_NAME
    from cgan.runtimes.onnxruntime_runner import make_session

    def ort_runner(**kw) -> Runner:
        sess = make_session(onnx_path, threads, **kw)

        def run(x):
            return sess.run(None, {INPUT_NAME: x})[0]
        run.inline = True  # type: ignore[attr-defined]  # 1 thread: computes on the calling thread
        return run

    runners["ort-fp32-recipe"] = ort_runner(split_deconv=False)
    runners["ort-fp32"] = ort_runner(split_deconv=True)
    runners["ort-int8"] = ort_runner(split_deconv=True, precision="int8", int8_cache=int8_cache)
    try:
        import openvino as ov

        core = ov.Core()
        for name, config in (("openvino-f32", {"INFERENCE_PRECISION_HINT": "f32"}), ("openvino-default", {})):
            compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU",
                                          {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", **config})
            request = compiled.create_infer_request()
            hint = compiled.get_property("INFERENCE_PRECISION_HINT")
            precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
            runners[name] = (lambda r: lambda x: r.infer({0: x})[0].copy())(request)
            runners[name].precision = precision  # type: ignore[attr-defined]
    except ImportError:
        for name in ("openvino-f32", "openvino-default"):
            skipped[name] = "openvino not installed (make bench installs requirements-bench.lock)"
    import torch

    from cgan.recipe.checkpoint import load_generator

    torch.set_num_threads(threads)
    model = load_generator(CHECKPOINT).eval()

    def torch_runner(fn) -> Runner:
        def run(x):
            with torch.inference_mode():
                return fn(torch.from_numpy(x)).numpy()
        run.inline = True  # type: ignore[attr-defined]
        return run

    runners["pytorch"] = torch_runner(model)
    try:
        compiled = torch.compile(model, backend="inductor", dynamic=False)
        runner = torch_runner(compiled)
        import numpy as np

        runner(np.zeros((100, 72), np.float32))  # compiles here, not while timing
        runners["torch-compile"] = runner
    except Exception as exc:  # no C compiler, unsupported platform: say why
        skipped["torch-compile"] = f"torch.compile failed: {str(exc).splitlines()[0][:160]}"
    return runners, skipped


PAUSE_S = 0.3  # between blocks: the thread pools of the runtime before stop spinning (OpenMP, TBB)


def interleaved_ms(runners: dict[str, Runner], x, rounds: int, calls: int,
                   clock=time.perf_counter, pause_s: float = PAUSE_S) -> dict[str, list[float]]:
    """Per-call milliseconds of every runner: `rounds` rounds, each runs every runner for one
    warm-up call and `calls` timed calls, in turn, with a pause before each block so that one
    runtime's idle-spinning threads do not take the cores from the next. clock
    time.thread_time (1 thread): CPU ms."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            time.sleep(pause_s)
            run(x)
            for _ in range(calls):
                t0 = clock()
                run(x)
                samples[name].append((clock() - t0) * 1000)
    return samples


def judge(runners: dict[str, Runner], grids: int) -> dict[str, dict]:
    """Label accuracy of each runner's outputs on `grids` seeded grids, and its max / mean abs
    pixel error against ONNX Runtime fp32 on the same inputs."""
    import numpy as np

    from cgan.quality.classifier import DEFAULT_CLASSIFIER, DigitClassifier
    from cgan.quality.report import EXPECTED_LABELS
    from cgan.recipe.bins import make_input_batch

    clf = DigitClassifier.load(DEFAULT_CLASSIFIER)
    inputs = [make_input_batch(ACCURACY_SEED, g) for g in range(grids)]
    reference = [runners["ort-fp32"](x) for x in inputs]
    out = {}
    for name, run in runners.items():
        hits, max_err, abs_sum, count = 0, 0.0, 0.0, 0
        for x, ref in zip(inputs, reference, strict=True):
            y = run(x)
            hits += int(np.sum(clf.predict(y) == EXPECTED_LABELS))
            err = np.abs(y - ref)
            max_err, abs_sum, count = max(max_err, float(err.max())), abs_sum + float(err.sum()), count + err.size
        out[name] = {"label_accuracy": round(hits / (100 * grids), 4), "digits": 100 * grids,
                     "max_abs_vs_fp32": round(max_err, 4), "mean_abs_vs_fp32": round(abs_sum / count, 5)}
    return out


def run_peers(threads: int = 2, rounds: int = 8, calls: int = 10, grids: int = 30,
              gflop_per_grid: float | None = None) -> dict:
    """The peers table as a dict (results.json's `peers`)."""
    import onnxruntime as ort

    from cgan.recipe.bins import make_input_batch
    from cgan.recipe.export import export_onnx

    if gflop_per_grid is None:
        from cgan.recipe.model import generator_gflop_per_grid

        gflop_per_grid = generator_gflop_per_grid()
    with tempfile.TemporaryDirectory(prefix="cgan-peers-") as tmp:
        onnx_path = Path(export_onnx(CHECKPOINT, Path(tmp) / "cgan.onnx").onnx_path)
        t0 = time.perf_counter()
        runners, skipped = make_runners(onnx_path, threads, Path(tmp) / "int8")
        setup_s = time.perf_counter() - t0
        x = make_input_batch(TIMING_SEED, 0)
        samples = interleaved_ms(runners, x, rounds, calls)
        quality = judge(runners, grids)
        # The same at 1 thread in CPU time of the calling thread: what a core's work costs, which
        # the load of other processes on a shared machine barely changes (wall time does). Only
        # runtimes that compute on the calling thread at 1 thread (ONNX Runtime, PyTorch);
        # OpenVINO computes on worker threads, whose CPU time cannot be told apart from the
        # idle spinning of the other runtimes' pools in this process.
        runners1, _ = make_runners(onnx_path, 1, Path(tmp) / "int8")
        runners1 = {k: v for k, v in runners1.items() if getattr(v, "inline", False)}
        cpu1 = interleaved_ms(runners1, x, max(2, rounds // 2), calls, clock=time.thread_time)
        from cgan.runtimes.ort_int8 import int8_model

        profile = node_profile(int8_model(onnx_path, cache_dir=Path(tmp) / "int8"))
    ceiling = int8_gemm_ceiling(threads)
    ceiling1 = int8_gemm_ceiling(1, clock=time.thread_time)
    rows = []
    for name, times in samples.items():
        median = statistics.median(times)
        row = {"backend": name, "threads": threads, "batch": 100, "ms_per_grid": round(median, 3),
               "ms_min": round(min(times), 3), "grids_per_s": round(1000 / median, 1),
               "gflops": round(gflop_per_grid / median * 1000, 1),
               "cpu_ms_1thread": round(statistics.median(cpu1[name]), 3) if name in cpu1 else None,
               "cpu_ms_1thread_min": round(min(cpu1[name]), 3) if name in cpu1 else None,
               **quality[name]}
        precision = getattr(runners[name], "precision", None)
        if precision is not None:
            row["precision"] = precision
        rows.append(row)
    base = {r["backend"]: r for r in rows}
    for r in rows:
        r["speedup_vs_ort_fp32"] = round(base["ort-fp32"]["ms_per_grid"] / r["ms_per_grid"], 2)
        if r["cpu_ms_1thread"]:
            r["cpu_speedup_vs_ort_fp32"] = round(base["ort-fp32"]["cpu_ms_1thread"] / r["cpu_ms_1thread"], 2)
    int8 = base["ort-int8"]
    return {
        "threads": threads, "rounds": rounds, "calls_per_round": calls, "setup_s": round(setup_s, 1),
        "rows": rows, "skipped": skipped, "int8_profile_1thread": profile, "int8_gemm_ceiling": ceiling,
        "int8_gemm_ceiling_1thread_cpu": ceiling1,
        "int8_fraction_of_ceiling": round(int8["gflops"] / ceiling["ceiling_gops"], 3),
        "int8_fraction_of_ceiling_1thread_cpu": round(
            gflop_per_grid / int8["cpu_ms_1thread"] * 1000 / ceiling1["ceiling_gops"], 3),
        "int8_label_accuracy_delta": round(int8["label_accuracy"] - base["ort-fp32"]["label_accuracy"], 4),
        "versions": {"onnxruntime": ort.__version__, **_versions()},
        "note": "wall-clock medians of interleaved blocks; other processes share this machine",
    }


def _versions() -> dict:
    import torch

    out = {"torch": torch.__version__}
    try:
        import openvino

        out["openvino"] = openvino.__version__.split("-")[0]
    except ImportError:
        pass
    return out


def print_peers(peers: dict) -> None:
    c = peers["int8_gemm_ceiling"]
    print(f"\nPeers at batch 100, {peers['threads']} thread(s), interleaved ({peers['rounds']} rounds x "
          f"{peers['calls_per_round']} calls); label accuracy on {peers['rows'][0]['digits']} digits:")
    print(f"{'backend':<22} {'ms/grid':>8} {'min':>7} {'grids/s':>8} {'vs ort':>7} {'cpu ms 1t':>9} {'vs ort':>7}"
          f" {'label acc':>9} {'max|d|':>7} {'mean|d|':>8}")
    for r in peers["rows"]:
        name = r["backend"] + (f" ({r['precision']})" if r.get("precision") else "")
        print(f"{name:<22} {r['ms_per_grid']:>8.2f} {r['ms_min']:>7.2f} {r['grids_per_s']:>8.1f} "
              f"{r['speedup_vs_ort_fp32']:>6.2f}x {r['cpu_ms_1thread'] or float('nan'):>9.2f} "
              f"{r.get('cpu_speedup_vs_ort_fp32', float('nan')):>6.2f}x {r['label_accuracy']:>9.4f} "
              f"{r['max_abs_vs_fp32']:>7.3f} {r['mean_abs_vs_fp32']:>8.4f}")
    for name, why in peers["skipped"].items():
        print(f"{name:<17} skipped: {why}")
    profile = peers.get("int8_profile_1thread", [])
    if profile:
        total = sum(r["ms"] for r in profile)
        print(f"int8 graph as ONNX Runtime runs it, 1 thread, fastest call per node: {total:.2f} ms in all; "
              + ", ".join(f"{r['op']} {r['node']} {r['ms']:.2f}" for r in profile[:6]))
    c1 = peers["int8_gemm_ceiling_1thread_cpu"]
    print(f"int8 GEMM ceiling (MatMulInteger u8 x s8, 2048^3): {peers['threads']} thread(s) wall "
          f"{c['ceiling_gops']:.0f} GOP/s, 1 thread CPU time {c1['ceiling_gops']:.0f} GOP/s; ORT int8 runs the "
          f"generator at {100 * peers['int8_fraction_of_ceiling']:.0f}% / "
          f"{100 * peers['int8_fraction_of_ceiling_1thread_cpu']:.0f}% of it; label accuracy int8 - fp32 = "
          f"{peers['int8_label_accuracy_delta']:+.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--grids", type=int, default=30, help="grids judged per peer (100 digits each)")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    peers = run_peers(args.threads, args.rounds, args.calls, args.grids)
    print_peers(peers)
    if args.out:
        args.out.write_text(json.dumps(peers, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
