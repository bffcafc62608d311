"""Simulated NPUs: how busy the ascend inference task keeps its NPU, K NPUs at once.

    .venv/bin/python scripts/bench_npu.py --npus 2 --grids 4000      # or via scripts/bench.py --sections npu

Each simulated NPU is one process running what the ascend inference task runs (cgan.run.inference
.run_shard: the shard's bins, the tool, the grids rendered and judged, packed, staged in the
publish bucket of a local S3 server, the hand-over), with the TIMED msame stand-in
(tests/standins/msame, STANDIN_MSAME_TIMED_MS=2.548: each call sleeps the recipe's 2.548 ms per
grid on a 310P instead of computing, so the host CPU is left to the task; the stand-in ais_bench
API's STANDIN_AIS_BENCH_TIMED_MS likewise, holding the GIL while it waits as aclruntime's run()
does). A stand-in: no NPU runs, and its grids are copies of one (the parity check would fail).
Three ways side by side: `ais_bench` (run_ais_bench: the session in a process of its own that
only feeds the NPU, 16 calls per infer_pipeline, the shard's bins pack read in place; the grids
rendered in the task's process), `batched` (run_msame_batches: one
msame per 1,000 bins, each grid rendered as soon as msame has written it: what the DAG runs with
npu_tool=msame) and `after` (one msame over the shard, then the rendering: the layout before
packs). Busy share = the NPU's compute time (grids x 2.548 ms) over the task's
wall time from the shard's start to its hand-over (Airflow's task start-up not included).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NPU_MS_PER_GRID = 2.548  # the recipe's msame figure on an Ascend 310 (docs/performance.md)
STANDIN_MSAME = REPO / "tests" / "standins" / "msame"
STANDIN_AIS_BENCH = REPO / "tests" / "standins" / "ais_bench_api"
MODES = ("ais_bench", "batched", "after")


def worker(args: dict) -> dict:
    """One simulated NPU's inference task (run in its own process)."""
    import boto3

    from cgan.ascend.msame import run_msame, run_msame_batches
    from cgan.layout.workspace import bins_pack_key
    from cgan.recipe.bins import write_bins_pack
    from cgan.run.inference import run_shard
    from cgan.run.plan import plan_shards
    from cgan.run.staging import BucketPacks
    from cgan.storage.store import open_store

    tmp = Path(args["tmp"])
    shard = plan_shards(args["grids"], "ascend", None, args["grids"])[0]
    store = open_store((tmp / "ws").as_uri())
    store.put_file(write_bins_pack(tmp / "pack", shard.count, args["seed"], start=0), bins_pack_key(0))
    client = boto3.client("s3", endpoint_url=args["endpoint"], region_name="us-east-1")
    # the stand-in runs on `python3` of the PATH: this interpreter's, which has ONNX Runtime
    env = {**os.environ, "STANDIN_MSAME_TIMED_MS": str(NPU_MS_PER_GRID),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    common = {"msame": str(STANDIN_MSAME), "channels": 1, "npu_smi": None, "device": args["device"], "env": env}

    runs: list = []  # MsameRun or InferenceRun: each has .perf

    def batched(bins, out, on_output):
        run = run_msame_batches(args["om"], bins, out, on_output=on_output, **common)
        runs.append(run)
        return run, [run.log_path]

    def ais_bench(bins, out, on_output):
        from cgan.ascend.ais_bench import run_ais_bench

        run = run_ais_bench(args["om"], bins, out, device=args["device"], on_output=on_output,
                            write_stems=shard.handed_stems)
        runs.append(run)
        return run, []

    def after(bins, out, on_output):
        run = run_msame(args["om"], bins, out, **common)
        runs.append(run)
        return run, [run.log_path]

    if args["mode"] == "ais_bench":  # the stand-in ais_bench/aclruntime packages, timed
        sys.path.insert(0, str(STANDIN_AIS_BENCH))
        os.environ["STANDIN_AIS_BENCH_TIMED_MS"] = str(NPU_MS_PER_GRID)
    runtime = {"batched": batched, "after": after, "ais_bench": ais_bench}[args["mode"]]
    t0 = time.perf_counter()
    result = run_shard(store, shard, tmp / "work", runtime, render_while_running=args["mode"] != "after",
                       stager=BucketPacks(client, "cgan", f"runs/bench-npu-{args['device']}"), log=lambda _m: None,
                       bins_pack=args["mode"] == "ais_bench")
    wall = time.perf_counter() - t0
    npu_s = shard.count * NPU_MS_PER_GRID / 1000
    tool_s = sum(r.perf.wall_s for r in runs)  # msame's processes, start to exit, one after another
    host = {k: v for k, v in result.cpu_s.items() if k in ("render", "pack", "upload", "judge")}
    found = [re.search(r"open ([0-9.]+) s after its start; it waited ([0-9.]+) s", note) for r in runs
             for note in r.perf.notes]  # ais_bench's NPU process: its start-up, its waits for the task
    process = next(({"opened_s": float(m[1]), "waited_s": float(m[2])} for m in found if m), None)
    return {"npu_process": process, "device": args["device"], "mode": args["mode"], "grids": shard.count,
            "wall_s": round(wall, 2), "call_ms": round(sum(r.perf.latency_ms["mean"] * r.perf.calls for r in runs)
                                                       / max(1, sum(r.perf.calls for r in runs)), 3),
            "npu_s": round(npu_s, 2), "busy": round(npu_s / wall, 3), "tool_s": round(tool_s, 2),
            "tool_busy": round(tool_s / wall, 3), "npu_share_of_tool": round(npu_s / tool_s, 3),
            "host_cpu_ms_per_grid": {k: round(1000 * v / shard.count, 3) for k, v in host.items()}}


def bench_npu(npus: int = 2, grids: int = 4000, modes: tuple[str, ...] = MODES) -> dict:
    """K simulated NPUs at once, each one task of `grids` grids, in each mode."""
    from cgan.recipe.export import export_onnx
    from scripts import local_s3
    from scripts.local_stack import local_keys

    os.environ.update(local_keys())
    root = Path(tempfile.mkdtemp(prefix="cgan-bench-npu-"))
    server = local_s3.start(root / "s3", None)
    try:
        local_s3.ensure_bucket(server.endpoint, "cgan")
        om = root / "cgan.om"  # the stand-in atc's "om": the ONNX itself
        shutil.copyfile(export_onnx(str(REPO / "models" / "cgan_generator.pth"), str(root / "m.onnx")).onnx_path, om)
        out: dict = {"npus": npus, "grids_per_npu": grids, "npu_ms_per_grid": NPU_MS_PER_GRID,
                     "cores": os.cpu_count()}
        for mode in modes:
            procs = []
            for device in range(npus):
                job = {"tmp": str(root / f"{mode}-{device}"), "grids": grids, "seed": device, "device": device,
                       "endpoint": server.endpoint, "om": str(om), "mode": mode}
                procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(job)],
                                              stdout=subprocess.PIPE, text=True, cwd=REPO))
            rows = []
            for proc in procs:
                stdout, _ = proc.communicate(timeout=1800)
                if proc.returncode != 0:
                    raise RuntimeError(f"a simulated NPU task failed (exit {proc.returncode})")
                rows.append(json.loads(stdout.strip().splitlines()[-1]))
            out[mode] = rows
        return out
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def print_table(d: dict) -> None:
    print(f"\nSimulated NPUs (timed msame stand-in, {d['npu_ms_per_grid']} ms per grid, computes nothing): "
          f"{d['npus']} at once, {d['grids_per_npu']:,} grids each, {d['cores']} cores")
    for mode, what in (("ais_bench", "ais_bench's Python API in a process of its own (infer_pipeline, the "
                                     "shard's bins pack read in place), grids rendered while the NPU computes"),
                       ("batched", "msame in batches, grids rendered while the next batch computes (now)"),
                       ("after", "one msame per shard, grids rendered after it (before)")):
        if mode not in d:  # not run (--modes)
            continue
        rows = d[mode]
        busy = ", ".join(f"npu {r['device']} {100 * r['busy']:.0f}%" for r in rows)
        host = rows[0]["host_cpu_ms_per_grid"] if rows else {}
        print(f"  {mode:<8} NPU busy share of its task's wall time: {busy}  (target >= 90%)  — {what}")
        print(f"           task wall {', '.join(str(r['wall_s']) for r in rows)} s for "
              f"{rows[0]['npu_s'] if rows else '?'} s of NPU work; host CPU ms per grid "
              + ", ".join(f"{k} {v}" for k, v in host.items())
              + f" = {sum(host.values()):.3f} (target <= 1.2)")
        if rows and rows[0].get("npu_process"):
            opened = ", ".join(f"{r['npu_process']['opened_s']} s" for r in rows)
            waited = ", ".join(f"{r['npu_process']['waited_s']} s" for r in rows)
            print(f"           the NPU's process: session open after {opened}; waited for the task to take "
                  f"outputs {waited}")
        tool = "the NPU process" if mode == "ais_bench" else "msame"
        print(f"           {tool} running: " + ", ".join(f"{100 * r['tool_busy']:.0f}%" for r in rows)
              + " of the task's wall (the rest: bins, start-up, the last grids' rendering, hand-over); "
              "the NPU computing: " + ", ".join(f"{100 * r['npu_share_of_tool']:.0f}%" for r in rows)
              + (" of its time (the rest: each call's wake-up on shared cores, one hand-over per chunk to the "
                 "thread that puts its outputs in the ring)" if mode == "ais_bench" else
                 " of msame's time (msame reads each input and writes each output between calls)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npus", type=int, default=2)
    parser.add_argument("--grids", type=int, default=4000, help="grids per simulated NPU")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    modes = tuple(m for m in args.modes.split(",") if m)
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes takes a comma list of {', '.join(MODES)}, got {args.modes!r}")
    result = bench_npu(args.npus, args.grids, modes)
    print_table(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
