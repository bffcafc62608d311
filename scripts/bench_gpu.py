#!/usr/bin/env python3
"""The generator on an NVIDIA GPU: grids/s by precision, batch and CUDA graphs (no TensorRT).

    python3 scripts/bench_gpu.py [--batches 100,1000,10000,100000] [--precisions fp32,tf32,fp16,bf16]
                                 [--compile] [--out bench/gpu]        (or: scripts/bench_gpu.sh)

Runs on a machine with an NVIDIA GPU and PyTorch, offline (nothing is downloaded). For each
precision and batch (digits per call; 100 = one grid, the recipe's shape) it times eager
PyTorch and a replayed CUDA graph with CUDA events, checks the outputs against fp32 on the
same seeded inputs (max abs error, pixels that change, digits the committed classifier
labels right), and prints the seed's T4 TensorRT and Ascend 310 figures beside them, labelled
as theirs. `--device cpu` runs the same harness on the CPU (no CUDA graphs) so it can be
tested anywhere. Writes <out>/gpu_results.json, updated after every measurement.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHECKPOINT = REPO / "models" / "cgan_generator.pth"
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
# Figures reported by the Ascend ModelZoo recipe: theirs, not measured by this script.
SEED_FIGURES = [
    {"hardware": "NVIDIA T4, TensorRT 7, fp16 (the recipe's perf_t4.sh)", "batch": 100,
     "ms_per_grid": 0.428223, "grids_per_s": 2337},
    {"hardware": "Ascend 310, msame, one chip (the recipe's README)", "batch": 100,
     "ms_per_grid": 2.547842, "grids_per_s": 392},
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    p.add_argument("--batches", default="100,1000,10000,100000",
                   help="digits per call, comma separated, each a multiple of 100")
    p.add_argument("--precisions", default=",".join(PRECISIONS),
                   help=f"comma separated, of {', '.join(PRECISIONS)}")
    p.add_argument("--min-seconds", type=float, default=1.0,
                   help="time each configuration for at least this long")
    p.add_argument("--check-grids", type=int, default=20,
                   help="grids judged by the classifier for each precision (0: skip)")
    p.add_argument("--compile", nargs="?", const="default", default=None,
                   choices=("default", "reduce-overhead", "max-autotune"),
                   help="also time torch.compile (inductor) in this mode at each batch "
                        "(tens of seconds to build each; reduce-overhead adds CUDA graphs)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="let cuDNN time its algorithms for each shape first (torch.backends.cudnn.benchmark)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu, for testing the harness")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "gpu")
    args = p.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batches must be integers separated by commas, got {args.batches!r}")
    if not args.batches or any(b < 100 or b % 100 for b in args.batches):
        p.error(f"--batches must be multiples of 100 (one grid = 100 digits), got {args.batches}")
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    unknown = [x for x in args.precisions if x not in PRECISIONS]
    if unknown or not args.precisions:
        p.error(f"--precisions: unknown {unknown}; choose from {', '.join(PRECISIONS)}")
    if args.device not in ("cuda", "cpu"):
        p.error(f"--device must be cuda or cpu, got {args.device!r}")
    return args


def seeded_inputs(batch: int, seed: int = 0):
    """[batch, 72] float32: grids 0..batch/100-1 of the product's own seeded bins."""
    import numpy as np

    from cgan.recipe.bins import make_input_batch

    return np.concatenate([make_input_batch(seed, g) for g in range(batch // 100)])


def set_precision(torch, precision: str) -> None:
    """fp32 is strict IEEE fp32 (TF32 off for matmuls and convolutions); tf32 lets both use it."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def model_for(torch, checkpoint: Path, precision: str, device: str):
    from cgan.recipe.checkpoint import load_generator

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    return load_generator(checkpoint).to(device=device, dtype=dtype), dtype


def time_calls(torch, fn, device: str, min_seconds: float) -> dict:
    """Median ms per call over rounds of calls, timed with CUDA events (or perf_counter)."""
    import statistics

    for _ in range(3):
        fn()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    once = max(time.perf_counter() - t0, 1e-6)
    per_round = max(1, min(1000, int(0.05 / once)))
    rounds = max(5, int(min_seconds / (once * per_round)))
    samples = []
    for _ in range(rounds):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(per_round):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / per_round)
        else:
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            samples.append((time.perf_counter() - t0) * 1000 / per_round)
    return {"ms_per_call": statistics.median(samples), "calls": rounds * per_round}


def graphed(torch, model, x):
    """A callable replaying `model(x)` as one captured CUDA graph (static input and output)."""
    static_in = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            model(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = model(static_in)
    return graph.replay, static_out


def accuracy_check(torch, model, dtype, reference, inputs, classifier, device: str) -> dict:
    """This precision's outputs against strict fp32 on the same inputs; classifier label accuracy."""
    import numpy as np

    from cgan.layout.tensors import NUM_CLASSES
    from cgan.recipe.grids import to_pixels

    with torch.inference_mode():
        out = model(torch.from_numpy(inputs).to(device=device, dtype=dtype)).float().cpu().numpy()
    result = {
        "max_abs_err_vs_fp32": float(np.abs(out - reference).max()),
        "pixels_changed_vs_fp32": float((to_pixels(out) != to_pixels(reference)).mean()),
    }
    if classifier is not None:
        labels = np.arange(len(out)) % NUM_CLASSES
        result["label_accuracy"] = float((classifier.predict(out) == labels).mean())
    return result


def machine(torch, device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def run(args) -> dict:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "bench_gpu: no CUDA GPU is visible to PyTorch "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Run it on a machine "
            "with an NVIDIA GPU and a CUDA build of PyTorch, or use `make bench` for the CPU "
            "(`--device cpu` only tests this harness)."
        )
    if not args.checkpoint.is_file():
        raise SystemExit(f"bench_gpu: checkpoint {args.checkpoint} not found (--checkpoint PATH)")
    args.out.mkdir(parents=True, exist_ok=True)
    out_file = args.out / "gpu_results.json"
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    results: dict[str, Any] = {"machine": machine(torch, args.device), "seed_figures": SEED_FIGURES,
                               "options": {"cudnn_benchmark": args.cudnn_benchmark, "compile": args.compile},
                               "runs": [], "accuracy": {}}

    def save():
        tmp = out_file.with_suffix(".part")
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(out_file)

    classifier = None
    if args.check_grids > 0:
        from cgan.quality.classifier import DigitClassifier

        try:
            classifier = DigitClassifier.load()
        except ImportError as exc:  # onnxruntime missing on that machine: parity only
            print(f"bench_gpu: no label accuracy ({exc})", flush=True)
        check_inputs = seeded_inputs(100 * args.check_grids, seed=1)
        set_precision(torch, "fp32")
        ref_model, _ = model_for(torch, args.checkpoint, "fp32", args.device)
        with torch.inference_mode():
            reference = ref_model(torch.from_numpy(check_inputs).to(args.device)).cpu().numpy()
        del ref_model

    modes = ["eager"] + (["cuda_graph"] if args.device == "cuda" else []) + (
        [f"compile:{args.compile}"] if args.compile else [])
    for precision in args.precisions:
        if args.device == "cpu" and precision in ("tf32", "fp16"):
            print(f"bench_gpu: {precision} skipped on the CPU", flush=True)
            continue
        set_precision(torch, precision)
        model, dtype = model_for(torch, args.checkpoint, precision, args.device)
        if args.check_grids > 0:
            results["accuracy"][precision] = accuracy_check(
                torch, model, dtype, reference, check_inputs, classifier, args.device)
            print(f"{precision}: {results['accuracy'][precision]}", flush=True)
        compiled = None
        for batch in args.batches:
            x = torch.from_numpy(seeded_inputs(batch)).to(device=args.device, dtype=dtype)
            for mode in modes:
                if args.device == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                build_s = 0.0
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    if mode == "eager":
                        fn = functools.partial(model, x)
                    elif mode == "cuda_graph":
                        fn, _ = graphed(torch, model, x)
                    else:
                        if compiled is None:
                            compiled = torch.compile(model, mode=args.compile, dynamic=False)
                        compiled(x)
                        fn = functools.partial(compiled, x)
                    if args.device == "cuda":
                        torch.cuda.synchronize()
                    build_s = time.perf_counter() - t0
                    timing = time_calls(torch, fn, args.device, args.min_seconds)
                grids = batch // 100
                row = {"precision": precision, "mode": mode, "batch": batch,
                       "ms_per_call": timing["ms_per_call"],
                       "ms_per_grid": timing["ms_per_call"] / grids,
                       "grids_per_s": 1000 * grids / timing["ms_per_call"],
                       "calls": timing["calls"], "build_s": round(build_s, 2)}
                if args.device == "cuda":
                    row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                results["runs"].append(row)
                save()
                print(f"{precision:5} {mode:16} batch {batch:>6}: {row['ms_per_grid']:.4f} ms/grid "
                      f"{row['grids_per_s']:>10,.0f} grids/s", flush=True)
                del fn
            del x
        del model, compiled
    save()
    return results


def table(results: dict) -> str:
    t4 = SEED_FIGURES[0]["grids_per_s"]
    lines = [f"{'precision':9} {'mode':16} {'batch':>7} {'ms/grid':>9} {'grids/s':>11} "
             f"{'vs T4 TRT':>9} {'peak MiB':>9}"]
    for r in results["runs"]:
        lines.append(f"{r['precision']:9} {r['mode']:16} {r['batch']:>7} {r['ms_per_grid']:>9.4f} "
                     f"{r['grids_per_s']:>11,.0f} {r['grids_per_s'] / t4:>8.1f}x "
                     f"{r.get('peak_gpu_mib', float('nan')):>9.0f}")
    lines.append("")
    for name, acc in results["accuracy"].items():
        label = f", label accuracy {acc['label_accuracy']:.3f}" if "label_accuracy" in acc else ""
        lines.append(f"{name}: max |err| vs fp32 {acc['max_abs_err_vs_fp32']:.2e}, "
                     f"pixels changed {acc['pixels_changed_vs_fp32']:.2%}{label}")
    lines.append("")
    lines.append("Seed figures (the recipe's, not measured here; one grid = one call of 100 digits):")
    for s in SEED_FIGURES:
        lines.append(f"  {s['hardware']}: {s['ms_per_grid']} ms/grid = {s['grids_per_s']:,.0f} grids/s")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run(args)
    print(json.dumps(results["machine"]))
    print(table(results))
    print(f"results: {args.out / 'gpu_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
