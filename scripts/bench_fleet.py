"""A fleet of simulated NPUs under the real scheduler: the ascend target at scale (issue 25, T4).

    .venv/bin/python scripts/bench_fleet.py --npus 8 --grids 100000 --compare 10000 --out fleet.json
    # or via scripts/bench.py --sections fleet

One fresh stack (scripts/bench_scheduler.Stack: LocalExecutor, SQLite, the local S3 server, the
real scheduler, api-server and dag-processor) whose `ascend_npu` pool, CGAN_NPU_SLOTS and
executor parallelism follow K NPUs, with the Ascend stand-ins of tests/standins wired as the
DAG tests wire them (a fake CANN home, the stand-in atc, msame and npu-smi, K devices, the lease
and double-use detector folders, a usage log) and the TIMED msame (STANDIN_MSAME_TIMED_MS: each
call sleeps the recipe's 2.548 ms per grid on a 310P instead of computing). Its outputs are copies
of one grid except the grids of the run's parity and label samples (taken from the plan's own
shards, cgan.run.plan.plan_shards), which it computes for real (STANDIN_MSAME_TIMED_REAL) so that
postprocess's parity check and the quality gate see true outputs. No NPU runs.

With --compare M, a run of M grids first (the same stack), then the run of N grids
(conf {"num_grids": N, "seed": 1, "target": "ascend", "soc_version": "Ascend310P3"}). For each:
wall time and grids/s; how many simulated NPUs were in use at once and each one's busy share (the
usage log's msame intervals over the run's wall time, and over the inference span); what the run
published (objects and bytes under its prefix, manifest bytes, packs, gate); the peak memory
(VmHWM) of the postprocess and publish task processes (their XCom `peak_rss_mb`) and of a fresh
process serving the gallery's run page for that run (plugins/cgan_gallery.py run_page, through
FastAPI's TestClient, against the publish bucket). Then the targets: publishes, objects <=
N/1000 + 300, manifest <= 1 MB, those peaks within 10% of the M-grid run's, all K NPUs at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.bench_npu import NPU_MS_PER_GRID  # noqa: E402
from scripts.bench_scheduler import (  # noqa: E402
    Stack,
    _children_cpu_s,
    _iso,
    local_client,
    run_once,
    run_wall_s,
    timeline,
)

SOC_VERSION = "Ascend310P3"
MAX_STANDIN_NPUS = 8  # the stand-in npu-smi's largest 310P3 sample (duo_x4.txt: devices 0..7)
MEMORY_TOLERANCE = 1.10  # T4: peak memory within 10% of the smaller run's
MANIFEST_LIMIT_BYTES = 1_000_000
PLUGIN_FILE = REPO / "plugins" / "cgan_gallery.py"
MEASURED = ("postprocess", "publish", "gallery run page")

GALLERY_CODE = """
import importlib.util, json, math, sys, time
from cgan.recipe.perf import peak_rss_mb
spec = importlib.util.spec_from_file_location("cgan_gallery", {plugin!r})
plugin = importlib.util.module_from_spec(spec)
sys.modules["cgan_gallery"] = plugin
spec.loader.exec_module(plugin)
from fastapi.testclient import TestClient
import cgan.publishing.gallery  # noqa: F401 - imported before the measured page, as a warm api-server has it
plugin.s3_client()  # the connection's client, made before the measured page
plugin.app.dependency_overrides[plugin.require_user] = lambda: None  # signed in (Airflow's login not measured)
client = TestClient(plugin.app)
before = peak_rss_mb()
t0 = time.perf_counter()
statuses = []
for page in (1, max(1, math.ceil({grids} / plugin.GRIDS_PER_PAGE))):  # the first and the last
    resp = client.get("/runs/{name}", params={{"page": page}}, headers={{"Accept": "text/html"}})
    statuses.append(resp.status_code)
    if resp.status_code != 200:
        print(resp.text[-2000:], file=sys.stderr)
print(json.dumps({{"statuses": statuses, "page_bytes": len(resp.content), "seconds": round(time.perf_counter() - t0, 3),
                  "before_mb": before, "peak_rss_mb": peak_rss_mb()}}))
"""


# -- pure functions (tests/scripts/test_bench_fleet.py) --------------------------------------------

def real_grids(n: int, npus: int) -> list[int]:
    """The grids whose outputs the run checks: its parity sample and its label sample, as the
    run's own plan names them per shard (make_plan -> plan_shards with npu_slots = K)."""
    from cgan.run.plan import plan_shards

    shards = plan_shards(n, "ascend", None, None, npu_slots=npus)
    return sorted({g for s in shards for g in (*(s.parity or ()), *(s.judge or ()))})


def read_uses(lines: Iterable[str]) -> list[dict]:
    """The usage log's msame intervals (STANDIN_NPU_USAGE_LOG: one JSON line per device use)."""
    uses = []
    for line in lines:
        line = line.strip()
        if line:
            use = json.loads(line)
            uses.append({"device": int(use["device"]), "start": float(use["start"]), "end": float(use["end"])})
    return uses


def npu_concurrency(uses: list[dict], start: float, end: float, npus: int,
                    span: tuple[float, float] | None = None) -> dict:
    """From device uses (each {device, start, end}, epoch seconds) clipped to [start, end]: the
    most distinct devices in use at one instant, for how long all `npus` were in use at once,
    and each device's busy time and its share of end - start (and of `span`, the inference
    tasks' first start to last end, when given). Touching intervals do not overlap."""
    clipped = [(u["device"], max(u["start"], start), min(u["end"], end)) for u in uses]
    clipped = [c for c in clipped if c[2] > c[1]]
    events = sorted([(s, 1, d) for d, s, _ in clipped] + [(e, -1, d) for d, _, e in clipped],
                    key=lambda ev: (ev[0], ev[1]))  # ends before starts at the same instant
    active: dict[int, int] = {}
    most, all_s, prev = 0, 0.0, None
    for t, delta, device in events:
        if prev is not None and len(active) >= npus:
            all_s += t - prev
        active[device] = active.get(device, 0) + delta
        if active[device] == 0:
            del active[device]
        most = max(most, len(active))
        prev = t
    wall = max(end - start, 1e-9)
    busy: dict[str, float] = {}
    for device in sorted({d for d, _, _ in clipped}):
        busy[str(device)] = round(_union_s([(s, e) for d, s, e in clipped if d == device]), 2)
    out = {"uses": len(clipped), "devices_used": len(busy), "max_devices_at_once": most,
           "all_at_once_s": round(all_s, 2), "busy_s": busy,
           "busy_share_of_run": {d: round(s / wall, 3) for d, s in busy.items()}}
    if span is not None and span[1] > span[0]:
        inner = npu_concurrency(uses, span[0], span[1], npus)
        out["span_s"] = round(span[1] - span[0], 2)
        out["busy_share_of_span"] = inner["busy_share_of_run"]
    return out


def _union_s(intervals: list[tuple[float, float]]) -> float:
    total, reach = 0.0, None
    for s, e in sorted(intervals):
        if reach is None or s > reach:
            total += e - s
            reach = e
        elif e > reach:
            total += e - reach
            reach = e
    return total


def task_rows(tis: list[dict]) -> dict[str, dict]:
    """Per task id: instances that succeeded, their seconds summed and the longest."""
    rows: dict[str, dict] = {}
    for ti in sorted(tis, key=lambda t: t.get("start_date") or ""):
        if ti.get("duration") is None or ti.get("state") != "success":
            continue
        row = rows.setdefault(ti["task_id"], {"instances": 0, "task_seconds": 0.0, "max_s": 0.0})
        row["instances"] += 1
        row["task_seconds"] = round(row["task_seconds"] + ti["duration"], 1)
        row["max_s"] = round(max(row["max_s"], ti["duration"]), 1)
    return rows


def inference_span(tis: list[dict]) -> tuple[float, float] | None:
    """The msame_infer tasks' first start to last end (epoch seconds)."""
    infer = [t for t in tis if t["task_id"] == "msame_infer" and t.get("start_date") and t.get("end_date")]
    if not infer:
        return None
    return min(_iso(t["start_date"]) for t in infer), max(_iso(t["end_date"]) for t in infer)


def targets(big: dict, small: dict | None, npus: int) -> list[dict]:
    """T4's checks on the N-grid run (`big`), its memory against the M-grid run (`small`)."""
    n = big["grids"]
    pub = big.get("published") or {}
    rows = [{"target": "publishes (manifest written, latest.json names it)", "value": pub.get("status"),
             "ok": big["state"] == "success" and bool(pub.get("latest"))}]
    limit = n // 1000 + 300
    rows.append({"target": f"objects under the run prefix <= N/1000 + 300 = {limit}", "value": pub.get("objects"),
                 "ok": pub.get("objects") is not None and pub["objects"] <= limit})
    rows.append({"target": "manifest <= 1 MB", "value": pub.get("manifest_bytes"),
                 "ok": pub.get("manifest_bytes") is not None and pub["manifest_bytes"] <= MANIFEST_LIMIT_BYTES})
    for what in MEASURED:
        a = (big.get("peak_rss_mb") or {}).get(what)
        b = ((small or {}).get("peak_rss_mb") or {}).get(what)
        ratio = round(a / b, 3) if a and b else None
        rows.append({"target": f"{what} peak memory within 10% of the {small['grids'] if small else '?'}-grid run's",
                     "value": ratio, "detail": f"{a} / {b} MiB",
                     "ok": ratio is not None and ratio <= MEMORY_TOLERANCE})
    most = (big.get("npu") or {}).get("max_devices_at_once")
    rows.append({"target": f"all {npus} simulated NPUs in use at once", "value": most, "ok": most == npus})
    return rows


# -- the runs ---------------------------------------------------------------------------------------

def fleet_env(root: Path, npus: int) -> dict[str, str]:
    """The stand-ins wired as tests/dags/test_cgan_generation.py's ascend run wires them, K NPUs,
    the timed msame, the pool-sized settings."""
    from tests.standins.fixtures import STANDINS, fake_toolkit_home

    devices = ",".join(str(d) for d in range(npus))
    return {
        "CGAN_ASCEND_TOOLKIT": str(fake_toolkit_home(root)), "CGAN_MSAME": str(STANDINS / "msame"),
        "CGAN_NPU_DEVICES": devices, "STANDIN_MSAME_DEVICES": devices,
        "CGAN_NPU_LOCK_DIR": str(root / "npu-locks"),
        "STANDIN_NPU_STATE_DIR": str(root / "npu-state"),  # the stand-ins refuse a device used twice at once
        "STANDIN_NPU_USAGE_LOG": str(root / "npu-usage.jsonl"),
        "STANDIN_NPU_SMI_SAMPLE": "duo_x4.txt",  # npu-smi lists 310P3 devices 0..7 (the lease checks the chip)
        "STANDIN_MSAME_TIMED_MS": str(NPU_MS_PER_GRID),
        "STANDIN_MSAME_TIMED_REAL": str(root / "real-grids.json"),  # rewritten before each run
        "CGAN_NPU_SLOTS": str(npus),  # automatic ascend shards balanced over K; the DAG's max_active_tasks
        "AIRFLOW__CORE__PARALLELISM": str(npus + 4),  # the LocalExecutor runs every NPU's task at once
    }


def trigger_and_wait(stack, conf: dict, timeout: float) -> dict:
    """bench_scheduler.run_once for the fleet: the XComs of postprocess and publish (when they
    succeeded), and a failed run returned (state failed), not raised."""
    result = run_once(stack.api, stack.components, conf, timeout, stack.children_as,
                      xcom_tasks=("postprocess", "publish"), check=False)
    result["xcoms"] = {task: values[0] for task, values in result["xcoms"].items() if values}
    return result


def run_published(endpoint: str, run_id: str) -> dict:
    """What run `run_id` holds in the publish bucket, found by its prefix (not latest.json, which
    a rejected run does not move): objects and bytes under it, manifest bytes, packs, gate status,
    whether latest.json names it; and the objects of the whole bucket."""
    from botocore.exceptions import ClientError

    from cgan.layout.published import LATEST_KEY, MANIFEST_NAME, run_prefix
    from cgan.run.plan import safe_run_id
    from scripts.local_stack import BUCKET

    client = local_client(endpoint)
    name = safe_run_id(run_id)
    prefix = run_prefix(name) + "/"
    pages = client.get_paginator("list_objects_v2")
    listed = [o for page in pages.paginate(Bucket=BUCKET, Prefix=prefix) for o in page.get("Contents", [])]
    bucket_objects = sum(len(page.get("Contents", [])) for page in pages.paginate(Bucket=BUCKET))
    out: dict = {"name": name, "prefix": prefix, "objects": len(listed), "bytes": sum(o["Size"] for o in listed),
                 "bucket_objects": bucket_objects, "manifest_bytes": None, "packs": None, "status": None,
                 "latest": False}
    manifest_key = prefix + MANIFEST_NAME
    try:
        body = client.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read()
    except ClientError:
        return out  # not published
    manifest = json.loads(body)
    out.update(manifest_bytes=len(body), packs=len(manifest.get("packs") or []), status=manifest.get("status"),
               grids=(manifest.get("summary") or {}).get("grids"))
    try:
        latest = json.loads(client.get_object(Bucket=BUCKET, Key=LATEST_KEY)["Body"].read())
        out["latest"] = latest.get("manifest") == manifest_key
    except ClientError:
        pass
    return out


def gallery_peak(env: dict[str, str], name: str, grids: int) -> dict:
    """A fresh process serving the gallery's run page of `name` (its first and last page of grids)
    from the publish bucket: its peak memory (VmHWM), before and after the pages."""
    code = GALLERY_CODE.format(plugin=str(PLUGIN_FILE), name=quote(name, safe=""), grids=int(grids))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"the gallery's run page failed: {proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["statuses"] != [200, 200]:
        raise RuntimeError(f"the gallery's run page answered {result['statuses']}: {proc.stderr[-3000:]}")
    return result


def one_run(stack, root: Path, n: int, npus: int, timeout: float) -> dict:
    """One measured run of n grids on the stack; its figures."""
    real = real_grids(n, npus)
    (root / "real-grids.json").write_text(json.dumps(real))
    usage = root / "npu-usage.jsonl"
    usage.unlink(missing_ok=True)
    conf = {"num_grids": n, "seed": 1, "target": "ascend", "soc_version": SOC_VERSION}
    print(f"run of {n:,} grids on {npus} simulated NPUs ({len(real)} grids computed for real) ...", flush=True)
    result = trigger_and_wait(stack, conf, timeout)
    run, tis = result["run"], result["task_instances"]
    start = _iso(run["start_date"])
    wall = run_wall_s(run) if run.get("end_date") else time.time() - start
    uses = []
    if usage.exists():
        uses = read_uses(usage.read_text().splitlines())
        os.replace(usage, root / f"npu-usage-{n}.jsonl")  # kept with --keep
    out: dict = {"grids": n, "state": run["state"], "run_id": run["dag_run_id"], "wall_s": round(wall, 1),
                 "grids_per_s": round(n / wall, 1), "real_grids": len(real),
                 "npu": npu_concurrency(uses, start, start + wall, npus, span=inference_span(tis)),
                 "tasks": task_rows(tis), "timeline": timeline(tis, start),
                 "run_cpu_s_by_component": result["component_cpu_s"]}
    out["host_cpu_ms_per_grid"] = round(1000 * sum(result["component_cpu_s"].values()) / n, 2)
    # the timed NPUs' own compute (grids x 2.548 ms) over K x the run's wall: the msame processes' intervals
    # above also hold their start-up, file I/O and output lines, which the host's CPU paces
    out["npu"]["compute_share_of_run"] = round(n * NPU_MS_PER_GRID / 1000 / npus / wall, 3)
    if run["state"] != "success":
        out["failed_tasks"] = [f"{t['task_id']}[{t['map_index']}]={t['state']}" for t in tis
                               if t["state"] not in ("success", "skipped")]
    published = [t for t in tis if t["task_id"] == "publish" and t.get("end_date")]
    out["published_s"] = round(_iso(published[0]["end_date"]) - start, 1) if published else None
    out["published"] = run_published(stack.s3.endpoint, run["dag_run_id"])
    peaks = {what: (result["xcoms"].get(task) or {}).get("peak_rss_mb")
             for what, task in (("postprocess", "postprocess"), ("publish", "publish"))}
    out["postprocess"] = {k: v for k, v in (result["xcoms"].get("postprocess") or {}).items()
                          if k in ("grids", "label_accuracy", "parity_max_abs_err", "gate", "gate_failures",
                                   "feature_diversity", "grids_per_s", "backend")}
    if out["published"]["manifest_bytes"] is not None:
        gallery = gallery_peak(stack.env, out["published"]["name"], n)
        out["gallery"] = gallery
        peaks["gallery run page"] = gallery["peak_rss_mb"]
    out["peak_rss_mb"] = peaks
    return out


def bench_fleet(npus: int = 8, grids: int = 100_000, compare: int | None = 10_000, keep: bool = False,
                timeout: float = 3600) -> dict:
    """Runs of `compare` (if any) then `grids` grids on one stack with `npus` simulated NPUs; T4's targets."""
    if not 1 <= npus <= MAX_STANDIN_NPUS:
        raise SystemExit(f"--npus must be 1..{MAX_STANDIN_NPUS} (the stand-in npu-smi lists devices 0..7)")
    tmp = Path(tempfile.mkdtemp(prefix="cgan-bench-fleet-", dir=REPO / "var" if (REPO / "var").is_dir() else None))
    cpu0 = _children_cpu_s()
    stack = Stack(tmp, fleet_env(tmp, npus), pool_slots=npus)
    out: dict = {"npus": npus, "npu_ms_per_grid": NPU_MS_PER_GRID, "cores": os.cpu_count(),
                 "topology": "LocalExecutor, SQLite, real scheduler", "runs": {}}
    try:
        for n in ([compare] if compare else []) + [grids]:
            r = out["runs"][str(n)] = one_run(stack, tmp, n, npus, timeout)
            print(f"  {r['state']} in {r['wall_s']} s ({r['grids_per_s']} grids/s); NPUs at once "
                  f"{r['npu']['max_devices_at_once']} of {npus}; peaks {r['peak_rss_mb']} MiB", flush=True)
    finally:
        stack.stop()
    out["stack_cpu_s"] = round(_children_cpu_s() - cpu0, 1)
    out["targets"] = targets(out["runs"][str(grids)], out["runs"].get(str(compare)) if compare else None, npus)
    out["machine"] = {"cores": os.cpu_count(), "load_avg_after": os.getloadavg()}
    if keep:
        out["stack_dir"] = str(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# -- printing -----------------------------------------------------------------------------------------

def print_run(r: dict, npus: int) -> None:
    npu = r.get("npu") or {}
    pub = r.get("published") or {}
    peaks = r.get("peak_rss_mb") or {}
    print(f"\n  {r['grids']:,} grids: run {r['state']} in {r['wall_s']} s ({r['grids_per_s']} grids/s), published "
          f"after {r.get('published_s')} s; {r.get('real_grids')} grids computed for real (parity + label samples)")
    if r.get("failed_tasks"):
        print(f"    not successful: {', '.join(r['failed_tasks'])}")
    print(f"    simulated NPUs: {npu.get('max_devices_at_once')} of {npus} in use at once (all {npus} for "
          f"{npu.get('all_at_once_s')} s), {npu.get('uses')} msame processes")
    share = npu.get("busy_share_of_run") or {}
    if npu.get("compute_share_of_run") is not None:
        print(f"    the NPUs' compute (grids x {NPU_MS_PER_GRID} ms) over {npus} x the run's wall: "
              f"{100 * npu['compute_share_of_run']:.1f}%; the msame processes' time (start-up, I/O, output lines "
              "included):")
    print("    busy share of the run's wall: " + ", ".join(f"npu {d} {100 * s:.0f}%" for d, s in share.items()))
    if npu.get("busy_share_of_span"):
        print(f"    busy share of the inference span ({npu.get('span_s')} s): "
              + ", ".join(f"npu {d} {100 * s:.0f}%" for d, s in npu["busy_share_of_span"].items()))
    print(f"    published: {pub.get('objects')} objects under {pub.get('prefix')} ({pub.get('packs')} packs), "
          f"{(pub.get('bytes') or 0) / 1e6:.1f} MB, manifest {pub.get('manifest_bytes')} bytes, gate "
          f"{pub.get('status')}, latest.json names it: {pub.get('latest')} (bucket: {pub.get('bucket_objects')} "
          "objects)")
    post = r.get("postprocess") or {}
    if post:
        print(f"    quality: label accuracy {post.get('label_accuracy')}, parity max abs err "
              f"{post.get('parity_max_abs_err')}, feature diversity {post.get('feature_diversity')}")
    gallery = r.get("gallery") or {}
    print(f"    peak memory (VmHWM): postprocess {peaks.get('postprocess')} MiB, publish {peaks.get('publish')} MiB, "
          f"gallery run page {peaks.get('gallery run page')} MiB (the process; {gallery.get('before_mb')} MiB "
          f"before its pages, {gallery.get('seconds')} s)")
    print(f"    host CPU during the run: {r.get('host_cpu_ms_per_grid')} ms per grid ("
          + ", ".join(f"{k} {v} s" for k, v in (r.get("run_cpu_s_by_component") or {}).items()) + ")")
    print(f"    {'task':<20} {'instances':>9} {'task-s':>8} {'max s':>7}")
    for task, row in (r.get("tasks") or {}).items():
        print(f"    {task:<20} {row['instances']:>9} {row['task_seconds']:>8.1f} {row['max_s']:>7.1f}")


def print_table(d: dict) -> None:
    print(f"\nFleet of simulated NPUs (ascend target, {d['npus']} NPUs, timed msame stand-in {d['npu_ms_per_grid']} "
          f"ms per grid; {d['topology']}; {d['cores']} cores):")
    for r in d["runs"].values():
        print_run(r, d["npus"])
    print("\n  targets (issue 25, T4):")
    for row in d.get("targets", []):
        detail = f" ({row['detail']})" if row.get("detail") else ""
        print(f"    {'ok  ' if row['ok'] else 'MISS'} {row['target']}: {row['value']}{detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npus", type=int, default=8, help=f"simulated NPUs, 1..{MAX_STANDIN_NPUS}")
    parser.add_argument("--grids", type=int, default=100_000)
    parser.add_argument("--compare", type=int, default=10_000, help="a run of this many grids first (0: none)")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs, database, usage log)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds each run may take")
    args = parser.parse_args(argv)
    result = bench_fleet(args.npus, args.grids, args.compare or None, keep=args.keep, timeout=args.timeout)
    print_table(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
