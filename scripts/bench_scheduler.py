"""The DAG as users run it: the real scheduler, runs triggered through the REST API.

    .venv/bin/python scripts/bench_scheduler.py --grids 2000        # or via scripts/bench.py --grids
    .venv/bin/python scripts/bench_scheduler.py --grids 2000 --celery   # docker-compose's topology

In one session: (1) the all-core pure inference time for the same N (ONNX Runtime, every core,
batch 100, only `session.run`), then (2) a fresh Airflow (SQLite, LocalExecutor: scheduler,
dag-processor, api-server) and a fresh local S3 server; one `cgan_generation` run of N grids is
triggered with `POST /api/v2/dags/cgan_generation/dagRuns` after a 20-grid warm-up run (as on
any deployment that has run before: api-server warm, the checkpoint's ONNX export stored;
`--cold` skips it), and its task instances (timeline, durations) and the inference tasks' XComs
(CPU seconds per part) are read back from the REST API. The run's CPU is each component's
(api-server, scheduler, task processes, dag-processor, S3 server) from the trigger to the run's
end. Prints a table; returns a dict for bench/results.json. `--celery`: docker-compose's
topology instead (CeleryBenchStack: PostgreSQL, Redis, CeleryExecutor, triggerer, a Celery
worker, the compose services' environments, workspaces and task logs in S3).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts import local_s3  # noqa: E402
from scripts.local_stack import AIRFLOW, BUCKET, local_env, local_keys  # noqa: E402

DAG_ID = "cgan_generation"
CHECKPOINT = REPO / "models" / "cgan_generator.pth"
PARTS = ("inference", "render", "judge", "pack", "upload")
POLL_S = 2.0  # the bench's own GET of the run; the UI's grid view polls about as often
WARM_UP_GRIDS = 20
COMPOSE_ARTIFACT_BUCKET = "cgan-artifacts"  # docker-compose.yaml's CGAN_ARTIFACT_ROOT
COMPOSE_LOG_BUCKET = "airflow-logs"  # docker-compose.yaml's remote task logs


PURE_CODE = """
import json, tempfile, time
from cgan.recipe.bins import make_input_batch
from cgan.recipe.export import export_onnx
from cgan.runtimes.onnxruntime_runner import make_session
n, threads, checkpoint = {n}, {threads}, {checkpoint!r}
with tempfile.TemporaryDirectory() as tmp:
    sess = make_session(export_onnx(checkpoint, tmp + '/m.onnx').onnx_path, threads=threads)
xs = [make_input_batch(1, g) for g in range(min(n, 50))]
for x in xs[:3]:
    sess.run(None, {{'image': x}})
print('READY', flush=True)
input()  # start together
t0 = time.perf_counter()
for g in range(n):
    sess.run(None, {{'image': xs[g % len(xs)]}})
print(json.dumps({{'seconds': time.perf_counter() - t0}}))
"""


def _pure_processes(counts: list[int], threads: int) -> float:
    """Wall seconds of len(counts) processes running `session.run` on counts[i] grids at once."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = [PURE_CODE.format(n=c, threads=threads, checkpoint=str(CHECKPOINT)) for c in counts]
    procs = [subprocess.Popen([sys.executable, "-c", c],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for c in code]
    for proc in procs:  # every session loaded and warm before any starts
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY"):
            raise RuntimeError(proc.communicate()[1][-3000:])
    for proc in procs:
        if proc.stdin:
            proc.stdin.write("\n")
            proc.stdin.flush()
    seconds = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(err[-3000:])
        seconds.append(json.loads(out.strip().splitlines()[-1])["seconds"])
    return max(seconds)


def pure_inference_s(n: int) -> dict:
    """The machine's capacity for n grids at batch 100, `session.run` only: the faster of one
    process on every core (ONNX Runtime threads = cores) and one 1-thread process per core
    running n / cores grids each at once (as the DAG's tasks do)."""
    cores = os.cpu_count() or 1
    one = _pure_processes([n], 0)
    split = _pure_processes([n // cores + (1 if i < n % cores else 0) for i in range(cores)], 1)
    secs = min(one, split)
    return {"grids": n, "cores": cores, "seconds": round(secs, 2), "one_process_all_threads_s": round(one, 2),
            "process_per_core_s": round(split, 2), "ms_per_grid": round(1000 * secs / n, 3),
            "grids_per_s": round(n / secs, 1)}


class _BenchStack:
    """What both stacks give the bench: `api`, the components whose CPU is measured, `run`."""

    components: dict[str, int]
    children_as: dict[str, str] = {}

    def api(self, method: str, path: str, **kwargs):
        raise NotImplementedError

    def run(self, conf: dict, timeout: float = 3600) -> dict:
        return run_once(self.api, self.components, conf, timeout, self.children_as)


class Stack(_BenchStack):
    """A throwaway Airflow (LocalExecutor, SQLite) + SeaweedFS under one temp folder."""

    # the scheduler's process tree holds the LocalExecutor's workers and every task process
    children_as = {"scheduler": "tasks (executor, supervisors, task processes)"}

    def __init__(self, root: Path, extra_env: dict[str, str] | None = None, artifact_bucket: str | None = None,
                 pool_slots: int = 1):
        self.root = root
        self.pool_slots = pool_slots  # the ascend_npu pool: one slot per (simulated) NPU
        self.artifact_bucket = artifact_bucket  # workspaces in this bucket of the S3 server (as compose's)
        os.environ.update(local_keys())  # the local server's documented local-only keys
        self.s3 = local_s3.start(root / "s3", None)
        self.procs: list[subprocess.Popen] = []
        self.components: dict[str, int] = {"s3 server": self.s3.process.pid}
        self.http: Any = None
        try:
            self._start(extra_env)
        except BaseException:
            self.stop()
            raise

    def _start(self, extra_env: dict[str, str] | None) -> None:
        root = self.root
        local_s3.ensure_bucket(self.s3.endpoint, BUCKET)
        if self.artifact_bucket:
            local_s3.ensure_bucket(self.s3.endpoint, self.artifact_bucket)
        self.port = _free_port()
        self.password = secrets.token_hex(8)
        (root / "passwords.json").write_text(json.dumps({"bench": self.password}))
        env = local_env(self.s3.endpoint)
        env.update({
            "AIRFLOW_HOME": str(root / "airflow"),
            "CGAN_ARTIFACT_ROOT": (f"s3://{self.artifact_bucket}" if self.artifact_bucket
                                   else (root / "artifacts").as_uri()),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "bench:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the triggered run, no nightly one
        })
        env.update(extra_env or {})
        self.env = env
        for cmd in (["db", "migrate"], ["pools", "set", "ascend_npu", str(self.pool_slots), "NPU slots"]):
            subprocess.run([AIRFLOW, *cmd], env=env, check=True, capture_output=True, timeout=600)
        for component in (["api-server", "--port", str(self.port)], ["scheduler"], ["dag-processor"]):
            log = open(root / f"{component[0]}.log", "ab")  # noqa: SIM115 - closed with the process
            self.procs.append(subprocess.Popen([AIRFLOW, *component], env=env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
            self.components[component[0]] = self.procs[-1].pid
        import httpx

        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self._wait(lambda: self.http.get("/api/v2/monitor/health").status_code == 200, 240, "api-server")
        token = self.http.post("/auth/token", json={"username": "bench", "password": self.password})
        token.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        self._wait(lambda: self.http.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 300, "the DAG")
        self.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})

    def _wait(self, ready, timeout: float, what: str) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except (OSError, httpx.TransportError):
                pass
            time.sleep(1)
        raise RuntimeError(f"{what} not ready within {timeout:.0f} s; logs in {self.root}")

    def api(self, method: str, path: str, **kwargs):
        resp = self.http.request(method, path, **kwargs)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:1000]}")
        return resp.json()

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.http is not None:
            self.http.close()
        self.s3.stop()


class CeleryBenchStack(_BenchStack):
    """docker-compose's topology without containers: tests/distributed/topology.CeleryStack (a
    fresh Postgres database, a Redis database, then api-server, scheduler (CeleryExecutor),
    dag-processor, triggerer and the default-queue Celery worker, each started with the
    environment and command its compose service has), SeaweedFS as the S3 server with the
    compose file's buckets (cgan, cgan-artifacts: the workspaces, airflow-logs: remote task
    logs). The worker's concurrency: the rule of docs/deployment.md, cores // threads per task (1)."""

    def __init__(self, root: Path, extra_env: dict[str, str] | None = None):
        from tests.distributed.topology import CeleryStack, S3Target, Worker, check_services

        services, problem = check_services()
        if problem:
            raise SystemExit(f"--celery needs PostgreSQL and Redis ({problem}); tests/distributed/topology.py "
                             "says where it looks (CGAN_TEST_POSTGRES, CGAN_TEST_REDIS)")
        keys = local_keys()
        os.environ.update(keys)
        self.root = root
        self.s3 = local_s3.start(root / "s3", None)
        try:
            for bucket in (BUCKET, COMPOSE_ARTIFACT_BUCKET, COMPOSE_LOG_BUCKET):
                local_s3.ensure_bucket(self.s3.endpoint, bucket)
            target = S3Target(endpoint=self.s3.endpoint, access_key=keys["AWS_ACCESS_KEY_ID"],
                              secret_key=keys["AWS_SECRET_ACCESS_KEY"], artifact_root=f"s3://{COMPOSE_ARTIFACT_BUCKET}",
                              publish_bucket=BUCKET, log_folder=f"s3://{COMPOSE_LOG_BUCKET}/logs")
            concurrency = {"AIRFLOW__CELERY__WORKER_CONCURRENCY": str(os.cpu_count() or 1)}
            worker = Worker("default", "bench-default", extra_env={**concurrency, **(extra_env or {})})
            self.stack = CeleryStack(services, root / "stack", s3=target, toolkit=str(root / "no-toolkit"),
                                     workers=[worker])
            self.stack.__enter__()
        except BaseException:
            self.s3.stop()
            raise
        try:
            self._ready(target.artifact_root)
        except BaseException:
            self.stop()
            raise

    def _ready(self, artifact_root: str) -> None:
        self.env = {"CGAN_ARTIFACT_ROOT": artifact_root}
        names = {"worker-default": "tasks (Celery worker, task processes)"}
        self.components = {"s3 server": self.s3.process.pid,
                           **{names.get(c.name, c.name): c.proc.pid for c in self.stack.components if c.proc},
                           **service_roots()}
        api = self.stack.api
        assert api is not None  # logged in by CeleryStack.__enter__
        deadline = time.monotonic() + 300
        while api.request("GET", f"/api/v2/dags/{DAG_ID}").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the DAG was not parsed within 300 s; logs in {self.root}")
            time.sleep(1)
        self.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})

    def api(self, method: str, path: str, **kwargs):
        assert self.stack.api is not None
        return self.stack.api.json(method, path, **kwargs)

    def stop(self) -> None:
        try:
            self.stack.__exit__(None, None, None)
        finally:
            self.s3.stop()


def service_roots() -> dict[str, int]:
    """The machine's PostgreSQL and Redis servers (the Celery topology's database and broker):
    the root process of each, by name."""
    import psutil

    roots: dict[str, int] = {}
    for proc in psutil.process_iter(["name", "ppid"]):
        name = proc.info["name"] or ""
        for service, prefix in (("postgres", "postgres"), ("redis", "redis-server")):
            if name.startswith(prefix) and service not in roots:
                try:
                    parent = psutil.Process(proc.info["ppid"]).name()
                except psutil.Error:
                    parent = ""
                if not parent.startswith(prefix):
                    roots[service] = proc.pid
    return roots


def run_once(api, components: dict[str, int], conf: dict, timeout: float = 3600,
             children_as: dict[str, str] | None = None, *, xcom_tasks: tuple[str, ...] = ("onnxruntime_infer",),
             check: bool = True) -> dict:
    """Trigger one run, wait for it; its REST record, task instances and the XComs of `xcom_tasks`'
    successful instances (`xcoms`, by task; `inference`: onnxruntime_infer's). `api(method, path,
    **kwargs)`: the REST answer's JSON; `components`, `children_as`: whose CPU is measured
    (component_cpu_s). `check`: raise when the run failed (else return it, state failed)."""
    cpu0 = component_cpu_s(components, children_as)
    t0 = time.perf_counter()
    run = api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            break
        time.sleep(POLL_S)
    observed = time.perf_counter() - t0
    cpu1 = component_cpu_s(components, children_as)
    run_cpu = {name: round(cpu1[name] - cpu0.get(name, 0.0), 1) for name in cpu1}
    tis = api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
              params={"limit": 100})["task_instances"]
    if check and run["state"] != "success":
        raise RuntimeError(f"run {run_id} ended {run['state']}: "
                           + ", ".join(f"{t['task_id']}[{t['map_index']}]={t['state']}" for t in tis))
    xcoms: dict[str, list] = {task: [] for task in xcom_tasks}
    for ti in tis:
        if ti["task_id"] in xcoms and ti["state"] == "success":
            entry = api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
                               f"/xcomEntries/return_value", params={"map_index": ti["map_index"]})
            value = entry["value"]
            xcoms[ti["task_id"]].append(json.loads(value) if isinstance(value, str) else value)
    return {"run": run, "task_instances": tis, "inference": xcoms.get("onnxruntime_infer", []), "xcoms": xcoms,
            "observed_s": observed, "component_cpu_s": run_cpu}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def component_cpu_s(components: dict[str, int], children_as: dict[str, str] | None = None) -> dict[str, float]:
    """CPU seconds so far of each component's process tree: its live processes' own CPU plus
    what their reaped children used. `children_as`: components whose descendants are reported
    apart, under that name (the LocalExecutor's scheduler: its workers and every task process)."""
    children_as = children_as or {}
    import psutil

    out: dict[str, float] = {}
    for name, pid in components.items():
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        own = 0.0
        total = 0.0
        for proc in procs:
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            mine = t.user + t.system
            total += mine + t.children_user + t.children_system
            if proc.pid == pid:
                own = mine
        if name in children_as:
            out[name] = own
            out[children_as[name]] = total - own
        else:
            out[name] = total
    return out


def timeline(tis: list[dict], run_start: float) -> list[dict]:
    """Each task instance's queued, start and end, in seconds from the run's start."""
    rows = []
    for ti in tis:
        if not ti.get("start_date"):
            continue
        rel = {key: round(_iso(ti[key]) - run_start, 1) if ti.get(key) else None
               for key in ("queued_when", "start_date", "end_date")}
        rows.append({"task": ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""), **rel})
    return sorted(rows, key=lambda r: r["start_date"])


def run_wall_s(run: dict) -> float:
    """A run's wall time: its start_date to its end_date (REST)."""
    return _iso(run["end_date"]) - _iso(run["start_date"])


def _iso(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def summarize(result: dict, pure: dict, stack_cpu_s: float) -> dict:
    """Per-task seconds, wall, ratio to pure inference, CPU per grid split by part."""
    run, tis = result["run"], result["task_instances"]
    n = pure["grids"]
    wall = run_wall_s(run)
    tasks: dict[str, dict] = {}
    for ti in sorted(tis, key=lambda t: t["start_date"] or ""):
        if ti["duration"] is None or ti["state"] != "success":
            continue
        row = tasks.setdefault(ti["task_id"], {"instances": 0, "task_seconds": 0.0, "max_s": 0.0, "queued_s": 0.0})
        row["instances"] += 1
        row["task_seconds"] = round(row["task_seconds"] + ti["duration"], 1)
        row["max_s"] = round(max(row["max_s"], ti["duration"]), 1)
        if ti.get("queued_when"):  # queued, waiting for an executor or Celery slot
            row["queued_s"] = round(row["queued_s"] + _iso(ti["start_date"]) - _iso(ti["queued_when"]), 1)
    infer = [ti for ti in tis if ti["task_id"] == "onnxruntime_infer" and ti["start_date"]]
    if infer:
        tasks["onnxruntime_infer"]["span_s"] = round(max(_iso(t["end_date"]) for t in infer)
                                                     - min(_iso(t["start_date"]) for t in infer), 1)
    published = [ti for ti in tis if ti["task_id"] == "publish" and ti["end_date"]]
    published_s = round(_iso(published[0]["end_date"]) - _iso(run["start_date"]), 1) if published else None
    cpu = {part: sum(x.get("cpu_s", {}).get(part, 0.0) for x in result["inference"]) for part in PARTS}
    # the inference task processes' CPU outside the parts: start-up, DAG parse, model and bins fetch, hand-over
    process_s = sum(x.get("cpu_s", {}).get("task_process", 0.0) for x in result["inference"])
    infer_other_s = round(process_s - sum(cpu.values()), 1) if process_s else None
    # the run's CPU: every component's between the trigger and the run's end (stack start-up and any
    # warm-up run excluded)
    run_cpu_s = sum((result.get("component_cpu_s") or {}).values()) or stack_cpu_s
    cpu["overhead"] = max(0.0, run_cpu_s - sum(cpu.values()))
    return {
        "grids": n, "wall_s": round(wall, 1), "published_s": published_s, "observed_s": round(result["observed_s"], 1),
        "pure_inference_s": pure["seconds"], "ratio": round(wall / pure["seconds"], 2),
        "grids_per_s": round(n / wall, 1), "pure_grids_per_s": pure["grids_per_s"],
        "tasks": tasks, "stack_cpu_s": round(stack_cpu_s, 1), "run_cpu_s": round(run_cpu_s, 1),
        "cpu_ms_per_grid": {part: round(1000 * secs / n, 2) for part, secs in cpu.items()},
        "conf": result["run"].get("conf"),
        "run_cpu_s_by_component": result.get("component_cpu_s"),
        "inference_tasks_cpu_s_outside_parts": infer_other_s,
        # each inference task process's peak resident memory (its XCom `peak_rss_mb`, VmHWM)
        "inference_task_peak_rss_mb": _spread([x["peak_rss_mb"] for x in result["inference"]
                                               if x.get("peak_rss_mb") is not None]),
        "timeline": timeline(tis, _iso(run["start_date"])),
    }


def local_client(endpoint: str):
    """A boto3 S3 client of the bench's S3 server, with the local server's keys."""
    import boto3

    keys = local_keys()
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])


def published_figures(endpoint: str) -> dict:
    """What the newest published run (latest.json's) holds in the publish bucket: objects and
    bytes under its prefix, manifest bytes, packs."""
    client = local_client(endpoint)
    latest = json.loads(client.get_object(Bucket=BUCKET, Key="latest.json")["Body"].read())
    body = client.get_object(Bucket=BUCKET, Key=latest["manifest"])["Body"].read()
    manifest = json.loads(body)
    prefix = latest["manifest"].rsplit("/", 1)[0] + "/"
    listed = [o for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
              for o in page.get("Contents", [])]
    return {"objects": len(listed), "bytes": sum(o["Size"] for o in listed), "manifest_bytes": len(body),
            "packs": len(manifest.get("packs") or []), "grids": manifest.get("grids")}


def _spread(values: list[float]) -> dict | None:
    return {"min": min(values), "max": max(values)} if values else None


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_scheduler(n: int, conf: dict | None = None, extra_env: dict[str, str] | None = None,
                    keep: bool = False, pure: dict | None = None, warm: bool = True,
                    s3_workspace: bool = False, celery: bool = False) -> dict:
    """Pure all-core inference for n grids (or `pure`, measured just before for the same n),
    then one scheduler run of n grids, side by side. `warm`: a run of WARM_UP_GRIDS first, as
    on any deployment that has run before (api-server warm, the checkpoint's ONNX in the model
    store); the measured run is the second. `s3_workspace`: the artifact root (workspaces, model
    store) in a bucket of the S3 server, as docker-compose has it, instead of a local folder.
    `celery`: docker-compose's topology (CeleryBenchStack; its workspaces are always in S3)."""
    if pure is None or pure["grids"] != n:
        pure = pure_inference_s(n)
    print(f"pure inference, {n} grids: {pure['seconds']} s ({pure['grids_per_s']} grids/s; one process on every "
          f"core {pure.get('one_process_all_threads_s')} s, a 1-thread process per core "
          f"{pure.get('process_per_core_s')} s)",
          flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="cgan-bench-sched-", dir=REPO / "var" if (REPO / "var").is_dir() else None))
    cpu0 = _children_cpu_s()
    stack: Stack | CeleryBenchStack
    if celery:
        stack = CeleryBenchStack(tmp, extra_env)
    else:
        stack = Stack(tmp, extra_env, artifact_bucket=COMPOSE_ARTIFACT_BUCKET if s3_workspace else None)
    try:
        warm_up = None
        if warm:  # a deployment that has run before: api-server warm, the checkpoint's export stored
            w = stack.run({"num_grids": WARM_UP_GRIDS, "seed": 2, "target": "cpu"})
            warm_up = {"grids": WARM_UP_GRIDS, "wall_s": round(run_wall_s(w["run"]), 1),
                       "timeline": timeline(w["task_instances"], _iso(w["run"]["start_date"]))}
            print(f"warm-up run of {WARM_UP_GRIDS} grids: {warm_up['wall_s']} s", flush=True)
        result = stack.run({"num_grids": n, "seed": 1, "target": "cpu", **(conf or {})})
        result["published"] = published_figures(stack.s3.endpoint)
    finally:
        stack.stop()
    stack_cpu = _children_cpu_s() - cpu0
    out = summarize(result, pure, stack_cpu)
    out["published"] = result.get("published")
    out["pure"] = pure
    out["warm_up"] = warm_up
    out["topology"] = ("docker-compose's (CeleryExecutor, Postgres, Redis, a Celery worker)" if celery
                       else "LocalExecutor, SQLite")
    out["artifact_root"] = stack.env["CGAN_ARTIFACT_ROOT"] if s3_workspace or celery else "file:// (a local folder)"
    out["machine"] = {"cores": os.cpu_count(), "load_avg_after": os.getloadavg()}
    if not keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        out["stack_dir"] = str(tmp)
    return out


def print_table(d: dict) -> None:
    print(f"\nDAG under the scheduler ({d.get('topology', 'LocalExecutor, SQLite')}, REST-triggered), "
          f"{d['grids']} grids, conf {d.get('conf')}, artifact root {d.get('artifact_root')}:")
    print(f"  wall {d['wall_s']} s ({d['grids_per_s']} grids/s) vs all-core pure inference {d['pure_inference_s']} s "
          f"({d['pure_grids_per_s']} grids/s) -> {d['ratio']}x; published (manifest written) after "
          f"{d.get('published_s')} s")
    print(f"  {'task':<20} {'instances':>9} {'task-s':>8} {'max s':>7} {'queued s':>9}")
    for task, row in d["tasks"].items():
        span = f"  (span {row['span_s']} s)" if "span_s" in row else ""
        print(f"  {task:<20} {row['instances']:>9} {row['task_seconds']:>8.1f} {row['max_s']:>7.1f} "
              f"{row.get('queued_s', 0.0):>9.1f}{span}")
    cpu = d["cpu_ms_per_grid"]
    outside = sum(cpu.get(k, 0.0) for k in ("render", "pack", "upload"))
    print(f"  host CPU per grid outside inference, measured in the inference tasks (render + pack + upload): "
          f"{outside:.2f} ms (target <= 1.2; the label checks of the run's 200-grid sample: judge)")
    if d.get("published"):
        pub = d["published"]
        print(f"  published: {pub['objects']} objects ({pub['packs']} packs + indexes, reports), "
              f"{pub['bytes'] / 1e6:.1f} MB, manifest {pub['manifest_bytes']:,} bytes")
    print("  CPU ms per grid: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
          + f"  (total {sum(cpu.values()):.2f}; the run's CPU {d.get('run_cpu_s')} s, the stack's "
          f"from start to stop {d['stack_cpu_s']} s)")
    if d.get("run_cpu_s_by_component"):
        print("  CPU s during the run by component: "
              + ", ".join(f"{k} {v}" for k, v in d["run_cpu_s_by_component"].items()))
    if d.get("inference_tasks_cpu_s_outside_parts") is not None:
        print(f"  inference task processes' CPU outside those parts (start-up, fetches, hand-over): "
              f"{d['inference_tasks_cpu_s_outside_parts']} s")
    if d.get("inference_task_peak_rss_mb"):
        peak = d["inference_task_peak_rss_mb"]
        print(f"  inference task processes' peak memory (VmHWM): {peak['min']}-{peak['max']} MiB")
    print("  timeline (s from the run's start: queued / started / ended):")
    for row in d.get("timeline", []):
        print(f"    {row['task']:<22} {row['queued_when']!s:>7} {row['start_date']!s:>7} {row['end_date']!s:>7}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, default=10_000)
    parser.add_argument("--conf", default="{}", help="extra run conf (JSON), e.g. '{\"grids_per_shard\": 500}'")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs, database)")
    parser.add_argument("--cold", action="store_true",
                        help="measure the fresh stack's first run (no warm-up run: api-server cold, no stored export)")
    parser.add_argument("--s3-workspace", action="store_true",
                        help="workspaces and model store in a bucket of the S3 server (docker-compose's "
                             "CGAN_ARTIFACT_ROOT=s3://cgan-artifacts) instead of a local folder")
    parser.add_argument("--celery", action="store_true",
                        help="docker-compose's topology without containers (CeleryExecutor, PostgreSQL, Redis, the "
                             "compose services' environments; needs PostgreSQL and Redis, see "
                             "tests/distributed/topology.py); workspaces in S3 as compose has them")
    parser.add_argument("--pure-from", type=Path,
                        help="reuse the pure inference time of an earlier result of the same N (A/B runs)")
    args = parser.parse_args(argv)
    pure = json.loads(args.pure_from.read_text())["pure"] if args.pure_from else None
    result = bench_scheduler(args.grids, json.loads(args.conf), keep=args.keep, pure=pure,
                             warm=not args.cold, s3_workspace=args.s3_workspace, celery=args.celery)
    print_table(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
