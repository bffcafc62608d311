#!/usr/bin/env python3
"""`make bench`: CPU inference against the machine's own fp32 ceiling, DAG overhead, task memory.

    .venv/bin/python scripts/bench.py [--quick] [--out bench]

Everything is measured side by side in one run (these machines are shared and noisy; compare
ratios, not absolute numbers). Writes bench/results.json and bench/bench.png, prints a table.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHECKPOINT = REPO / "models" / "cgan_generator.pth"


def _gflop_per_grid() -> float:
    from cgan.recipe.model import generator_gflop_per_grid

    return generator_gflop_per_grid()


def _median_ms(fn, reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def matmul_ceiling(threads: int, n: int = 2048) -> dict:
    """fp32 GEMM GFLOP/s of ONNX Runtime (MLAS) and numpy at n x n x n."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    flop = 2 * n ** 3 / 1e9
    ort_ms = _median_ms(lambda: sess.run(None, {"a": a, "b": a}), 5)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    code = (f"import numpy as np,time,statistics;a=np.random.default_rng(0).random(({n},{n}),dtype=np.float32);"
            "[a@a for _ in range(2)];t=[];\n"
            "for _ in range(5):\n s=time.perf_counter();a@a;t.append(time.perf_counter()-s)\n"
            "print(statistics.median(t)*1000)")
    np_ms = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                 check=True).stdout)
    result = {"onnxruntime_gflops": flop / ort_ms * 1000, "numpy_gflops": flop / np_ms * 1000}
    result["ceiling_gflops"] = max(result.values())
    return result


def _eager(torch, model, x) -> None:
    with torch.inference_mode():
        model(x)


def runtime_speed(batches: list[int], threads_list: list[int], reps: int) -> list[dict]:
    import numpy as np
    import torch

    from cgan.recipe.bins import make_input_batch
    from cgan.recipe.checkpoint import load_generator
    from cgan.recipe.export import export_onnx
    from cgan.runtimes.onnxruntime_runner import make_session

    model = load_generator(CHECKPOINT)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in batches:
            x = np.concatenate([make_input_batch(0, g) for g in range(batch // 100)])
            onnx_path = export_onnx(CHECKPOINT, f"{tmp}/b{batch}.onnx", batch=batch).onnx_path
            for threads in threads_list:
                sess = make_session(onnx_path, threads=threads)
                ort_ms = _median_ms(functools.partial(sess.run, None, {"image": x}), reps)
                recipe = make_session(onnx_path, threads=threads, split_deconv=False)
                recipe_ms = _median_ms(functools.partial(recipe.run, None, {"image": x}), reps)
                torch.set_num_threads(threads)
                torch_ms = _median_ms(functools.partial(_eager, torch, model, torch.from_numpy(x)), reps)
                for backend, ms in (("onnxruntime", ort_ms), ("ort-recipe-graph", recipe_ms),
                                    ("pytorch", torch_ms)):
                    rows.append({"backend": backend, "batch": batch, "threads": threads,
                                 "ms_per_call": ms, "ms_per_grid": ms / (batch // 100),
                                 "grids_per_s": 1000 * (batch // 100) / ms})
    return rows


def _peak_rss_mb(code: str) -> tuple[float, float]:
    """Run code in a fresh Python; return (peak RSS MiB, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    usage = json.loads(proc.stdout.strip().splitlines()[-1])
    return usage["maxrss_mb"], time.perf_counter() - t0


TASK_CODE = {
    "export_onnx": "from cgan.recipe.export import export_onnx; export_onnx({ckpt!r}, {ws!r} + '/cgan.onnx')",
    "input_bins": ("from cgan.run.plan import MAX_AUTO_GRIDS_PER_SHARD, plan_shards\n"
                   "from cgan.recipe.bins import write_bins, write_bins_pack\n"
                   "from cgan.layout.workspace import bins_pack_key\n"
                   "for s in plan_shards({n}, 'cpu', [0], MAX_AUTO_GRIDS_PER_SHARD):\n"
                   "    write_bins({ws!r} + '/' + s.bins_prefix, s.count, 1, start=s.start)\n"
                   "    write_bins_pack({ws!r} + '/' + bins_pack_key(s.index), s.count, 1, start=s.start)"),
    # one shard as the inference task runs it (cgan.run.inference.run_shard: grids rendered and packed
    # while ONNX Runtime computes), every raw output handed over for postprocess's worst case below
    "onnxruntime_infer": ("from cgan.run.plan import MAX_AUTO_GRIDS_PER_SHARD, plan_shards\n"
                          "from cgan.run.inference import run_shard\n"
                          "from cgan.runtimes.onnxruntime_runner import run_onnxruntime\n"
                          "from cgan.storage.store import open_store\n"
                          "import pathlib, tempfile\n"
                          "s = plan_shards({n}, 'cpu', [0], MAX_AUTO_GRIDS_PER_SHARD, keep_raw_outputs=True)[0]\n"
                          "def ort(bins, out, on_output):\n"
                          "    return run_onnxruntime({ws!r} + '/cgan.onnx', bins, out, on_output=on_output), []\n"
                          "with tempfile.TemporaryDirectory() as tmp:\n"
                          "    run_shard(open_store(pathlib.Path({ws!r}).as_uri()), s, pathlib.Path(tmp), ort,\n"
                          "              log=lambda m: None)"),
    "postprocess": ("from cgan.run.plan import MAX_AUTO_GRIDS_PER_SHARD, plan_shards\n"
                    "from cgan.storage.store import open_store\n"
                    "from cgan.run.postprocess import postprocess_run\n"
                    "from cgan.layout.workspace import output_key, shard_perf_key\n"
                    "import pathlib, shutil\n"
                    "ws = pathlib.Path({ws!r})\n"
                    "shards = plan_shards({n}, 'cpu', [0], MAX_AUTO_GRIDS_PER_SHARD, keep_raw_outputs=True)\n"
                    "for s in shards[1:]:\n"
                    "    for g in s.grids:\n"
                    "        (ws / output_key(s.index, g)).parent.mkdir(parents=True, exist_ok=True)\n"
                    "        shutil.copyfile(ws / output_key(0, g - s.start), ws / output_key(s.index, g))\n"
                    "    shutil.copyfile(ws / shard_perf_key(0), ws / shard_perf_key(s.index))\n"
                    "postprocess_run(open_store(ws.as_uri()), shards, {ckpt!r}, log=lambda m: None)"),
}
# VmHWM (the peak RSS of this process image): unlike ru_maxrss it is not inherited across exec
# from the parent, which here has torch loaded.
RSS_TAIL = ("\nimport json, re; hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())"
            "\nprint(json.dumps({{'maxrss_mb': int(hwm.group(1)) / 1024}}))")


def task_memory(n: int) -> dict:
    """Each step of the DAG's cpu path in its own process on n grids: peak RSS and seconds.

    Inference runs one shard (MAX_AUTO_GRIDS_PER_SHARD grids, as the DAG maps them) and renders its grids as the
    operator does; postprocess covers all n grids on its fallback path (keep_raw_outputs and no
    tally), rendering every grid itself (shard outputs beyond the first are copies of it, so the
    step sees n grids)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="cgan-bench-") as ws:
        for task, code in TASK_CODE.items():
            mb, secs = _peak_rss_mb(code.format(ckpt=str(CHECKPOINT), ws=ws, n=n) + RSS_TAIL.format())
            out[task] = {"peak_rss_mb": round(mb, 1), "seconds": round(secs, 1)}
    return out


def dag_overhead(n: int, ort_ms_per_grid: float) -> dict:
    """Wall time of one `airflow dags test` run of n grids vs n x the pure ORT time per grid,
    and what the run wrote to and left in the artifact store (`artifact_storage`)."""
    from scripts.local_stack import local_env, prepare_airflow, start_s3

    server = start_s3(port=None)
    try:
        env = local_env(server.endpoint)
        prepare_airflow(env)
        before = artifact_bytes(env["CGAN_ARTIFACT_ROOT"])
        conf = json.dumps({"num_grids": n, "seed": 1, "target": "cpu"})  # the form's other defaults
        t0 = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).with_name("airflow")), "dags", "test", "cgan_generation",
                               "-c", conf], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError((proc.stdout + proc.stderr)[-3000:])
    finally:
        server.stop()
    pure = n * ort_ms_per_grid / 1000
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    return {"grids": n, "dag_wall_s": round(wall, 1), "pure_inference_s": round(pure, 1),
            "ratio": round(wall / pure, 2), "task_seconds": task_seconds(db),
            "storage": artifact_storage(db, env["CGAN_ARTIFACT_ROOT"], before, n)}


# --- artifact store: bytes written per grid, storage left after the run --------------------


def artifact_bytes(root_uri: str) -> int:
    """Bytes held under a file:// artifact root (the local stack's)."""
    from cgan.storage.store import open_store

    return open_store(root_uri).usage()[1] if root_uri.startswith("file:") else 0


def artifact_storage(db_path: Path, root_uri: str, before: int, grids: int) -> dict:
    """What the newest run wrote to the artifact store and what it left there.

    The run's workspace is removed by its `cleanup` task, which reports the bytes it held
    (everything the run wrote there: bins, handed-over outputs, grids, perf, quality); the
    model store and atc cache grow only when the content is new (`left - before`)."""
    import sqlite3

    with sqlite3.connect(db_path) as db:
        row = db.execute("SELECT value FROM xcom WHERE task_id = 'cleanup' AND key = 'return_value' "
                         "ORDER BY dag_run_id DESC LIMIT 1").fetchone()
    cleanup = json.loads(row[0]) if row else {}
    if isinstance(cleanup, str):
        cleanup = json.loads(cleanup)
    left = cleanup.get("left_bytes", artifact_bytes(root_uri))
    written = cleanup.get("removed_bytes", 0) + max(0, left - before)
    return {"grids": grids, "workspace_bytes": cleanup.get("removed_bytes"), "bytes_written": written,
            "bytes_written_per_grid": round(written / grids), "left_bytes": left, "left_before_run": before}


def task_seconds(db_path: Path) -> dict:
    """Seconds per task of the newest run in the local Airflow database (mapped tasks summed)."""
    import sqlite3

    if not db_path.is_file():
        return {}
    with sqlite3.connect(db_path) as db:
        run = db.execute("SELECT run_id FROM dag_run ORDER BY id DESC LIMIT 1").fetchone()
        if run is None:
            return {}
        rows = db.execute("SELECT task_id, SUM(duration) FROM task_instance WHERE run_id = ? "
                          "AND duration IS NOT NULL GROUP BY task_id ORDER BY MIN(start_date)", run).fetchall()
    return {task: round(seconds, 1) for task, seconds in rows if seconds}


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["speed"] if r["batch"] == 100]
    names = {"onnxruntime": "ONNX Runtime", "ort-recipe-graph": "ORT,\nrecipe graph", "pytorch": "PyTorch"}
    labels = [f"{names.get(r['backend'], r['backend'])}\n{r['threads']} thr" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    values = [r["fraction_of_ceiling"] * 100 for r in rows]
    bars = ax.bar(labels, values, color="#4a7fb5")
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(f"{value:.0f}%", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom")
    ax.axhline(85, linestyle="--", color="gray", linewidth=1, label="issue target, ONNX Runtime at 1 thread")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_ylabel("% of measured fp32 GEMM ceiling")
    ax.set_title("Generator at batch 100 (one grid per call)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


DEFAULT_SECTIONS = ("speed", "memory", "scheduler", "celery", "peers", "npu", "fleet")  # `dag` on request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer reps, smaller runs")
    parser.add_argument("--out", type=Path, default=REPO / "bench")
    parser.add_argument("--skip-dag", action="store_true")
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                        help="comma list of speed, memory, scheduler, celery (docker-compose's topology, where "
                             "PostgreSQL and Redis answer), dag, peers, npu (simulated NPUs), fleet (K simulated NPUs "
                             "under the real scheduler, ascend target; default: all but dag)")
    parser.add_argument("--grids", type=int, default=None,
                        help="grids of the scheduler run (default 10,000; 200 with --quick)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reps = 10 if args.quick else 30
    results: dict[str, Any] = {"machine": {"cores": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
                               "gflop_per_grid": _gflop_per_grid()}
    print(f"generator work per grid (100 digits, C=1): {results['gflop_per_grid']:.3f} GFLOP", flush=True)
    sections = set(args.sections.split(","))
    if args.skip_dag:
        sections.discard("dag")
    previous = args.out / "results.json"
    if sections != set(DEFAULT_SECTIONS) and previous.exists():  # keep the sections not re-run
        results = {**json.loads(previous.read_text()), **results}
    if "speed" in sections or "speed" not in results:
        results["ceiling"] = {str(t): matmul_ceiling(t) for t in (1, 2)}
        results["speed"] = runtime_speed([100, 200, 500] if not args.quick else [100, 500], [1, 2], reps)
    for r in results["speed"]:
        ceiling = results["ceiling"][str(r["threads"])]["ceiling_gflops"]
        r["gflops"] = results["gflop_per_grid"] / (r["ms_per_grid"] / 1000)
        r["fraction_of_ceiling"] = r["gflops"] / ceiling
    base = {(r["batch"], r["threads"]): r for r in results["speed"] if r["backend"] == "pytorch"}
    for r in results["speed"]:
        r["speedup_vs_pytorch"] = base[(r["batch"], r["threads"])]["ms_per_grid"] / r["ms_per_grid"]
    ort100 = min(r["ms_per_grid"] for r in results["speed"] if r["backend"] == "onnxruntime" and r["batch"] == 100
                 and r["threads"] == 1)
    sizes = (100, 1000) if args.quick else (100, 10_000)
    if "memory" in sections:
        results["task_memory"] = {str(n): task_memory(n) for n in sizes}
    if "dag" in sections:
        results["dag"] = dag_overhead(200 if args.quick else 10_000, ort100)
    if "peers" in sections:  # ORT fp32/int8, OpenVINO, torch.compile, eager: scripts/bench_peers.py
        from scripts.bench_peers import run_peers

        results["peers"] = run_peers(threads=2, rounds=3 if args.quick else 8, grids=20 if args.quick else 30,
                                     gflop_per_grid=results["gflop_per_grid"])
    if "npu" in sections:  # the ascend inference task on simulated NPUs (scripts/bench_npu.py)
        from scripts.bench_npu import bench_npu

        results["npu"] = bench_npu(npus=2, grids=1000 if args.quick else 4000)
    if "fleet" in sections:  # the ascend target on 8 simulated NPUs under the real scheduler (scripts/bench_fleet.py)
        from scripts.bench_fleet import bench_fleet

        results["fleet"] = (bench_fleet(npus=4, grids=3000, compare=1000) if args.quick
                            else bench_fleet(npus=8, grids=100_000, compare=10_000))
    if sections & {"scheduler", "celery"}:  # the DAG as users run it (scripts/bench_scheduler.py)
        run_scheduler_sections(results, sections, args.grids or (200 if args.quick else 10_000))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    chart(results, args.out / "bench.png")
    print_table(results)
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'bench.png'}")
    return 0


def run_scheduler_sections(results: dict, sections: set[str], n: int) -> None:
    """`scheduler` (the local stack) and `celery` (docker-compose's topology, where its services
    answer; the same pure inference time) for n grids."""
    from scripts.bench_scheduler import bench_scheduler

    if "scheduler" in sections:
        results["scheduler"] = bench_scheduler(n)
    if "celery" in sections:
        from tests.distributed.topology import check_services

        problem = check_services()[1]
        if problem:
            print(f"celery section skipped: {problem}", flush=True)
            results.pop("celery", None)
        else:
            pure = (results.get("scheduler") or {}).get("pure")
            results["celery"] = bench_scheduler(n, pure=pure, celery=True)


def print_table(results: dict) -> None:
    from scripts import bench_scheduler

    for section in ("scheduler", "celery"):
        if section in results:
            bench_scheduler.print_table(results[section])
    if "npu" in results:
        from scripts import bench_npu

        bench_npu.print_table(results["npu"])
    if "fleet" in results:
        from scripts import bench_fleet

        bench_fleet.print_table(results["fleet"])
    print("\nfp32 GEMM ceiling (2048^3), GFLOP/s:")
    for t, c in results["ceiling"].items():
        print(f"  {t} thread(s): ONNX Runtime {c['onnxruntime_gflops']:.0f}, numpy {c['numpy_gflops']:.0f}"
              f" -> ceiling {c['ceiling_gflops']:.0f}")
    print(f"\n{'backend':<12} {'batch':>5} {'thr':>3} {'ms/grid':>8} {'grids/s':>8} {'GFLOP/s':>8} {'%ceil':>6}"
          f" {'vs torch':>8}")
    for r in results["speed"]:
        print(f"{r['backend']:<12} {r['batch']:>5} {r['threads']:>3} {r['ms_per_grid']:>8.2f} {r['grids_per_s']:>8.1f}"
              f" {r['gflops']:>8.0f} {100 * r['fraction_of_ceiling']:>5.0f}% {r['speedup_vs_pytorch']:>7.2f}x")
    print("\npeak memory per task (own process), MiB / seconds:")
    for n, tasks in results.get("task_memory", {}).items():
        print(f"  N={n:>6}: "
              + ", ".join(f"{k} {v['peak_rss_mb']:.0f} / {v['seconds']:.0f}s" for k, v in tasks.items()))
    if "peers" in results:
        from scripts.bench_peers import print_peers

        print_peers(results["peers"])
    if "dag" in results:
        d = results["dag"]
        print(f"\nDAG end to end, {d['grids']} grids: {d['dag_wall_s']} s wall vs {d['pure_inference_s']} s pure "
              f"inference -> {d['ratio']}x")
        if d.get("task_seconds"):
            print("  task seconds: " + ", ".join(f"{k} {v}" for k, v in d["task_seconds"].items()))
        if d.get("storage"):
            st = d["storage"]
            print(f"  artifact store: {st['bytes_written_per_grid'] / 1000:.1f} KB written per grid "
                  f"({st['bytes_written'] / 1e6:.1f} MB for {st['grids']} grids); left after the run: "
                  f"{st['left_bytes'] / 1e6:.1f} MB (before: {st['left_before_run'] / 1e6:.1f} MB)")


if __name__ == "__main__":
    raise SystemExit(main())
