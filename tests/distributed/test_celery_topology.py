"""A distributed run proven on this machine: the production topology without containers.

Started for real, each as its own process group with its own AIRFLOW_HOME and TMPDIR:
PostgreSQL (a fresh database: the metadata DB), Redis (Celery broker and result backend),
`airflow api-server`, `airflow scheduler` (CeleryExecutor), `airflow dag-processor`,
`airflow triggerer`, and two Celery workers, `airflow celery worker` (default queue) and
`airflow celery worker -q ascend -c 1`, plus SeaweedFS as S3 for the per-run artifact store
(CGAN_ARTIFACT_ROOT=s3://...), publishing and the remote task logs.

One source of truth: every component is started with the environment and command that
docker-compose.yaml gives its service, read with Compose's own parser (compose_env.py), with
only the test's credentials and addresses swapped in (psycopg driver, FAB auth manager, shared
Fernet key / JWT secret / [api] secret_key, the cgan_s3 connection, remote logging: all the
compose file's). The Celery workers, an extra NPU host's too, run with no database setting at
all and neither the Fernet key nor the JWT secret, as the compose files give them: every task of
the run, Celery results (to Redis), live logs and healthchecks work without. The workers'
compose healthchecks are run against the live workers. The run
is triggered through the REST API with target=ascend, 3 grids in shards of 2, devices
[0, 1] (the NPUs a shard may lease), seed 1. Only the ascend worker has the Ascend tools: the atc/msame stand-ins of
tests/standins (a fake CANN toolkit whose set_env.sh puts atc on PATH, CGAN_MSAME, the
stand-ins on PATH, and the STANDIN_*_CALLS call logs in a folder only that worker is told
about). The default worker has none of them, so an Ascend task routed to it would fail.

How routing is proven. Both workers run on one host, so the usual evidence (the task
instance's `hostname` = the host's FQDN) could not tell them apart. Four independent pieces
of evidence, each of which a misrouted task would contradict:

1. `hostname` from the REST API. Each worker is started with its own CGAN_TEST_NODE and
   `[core] hostname_callable = tests.distributed.node.hostname`. The task process that a
   worker forks inherits that variable and reports it to the Execution API when it starts
   (and on each heartbeat), so the API's `hostname` of every task instance, mapped ones
   included, names the worker whose environment ran it. atc_convert and msame_infer[0,1]
   must carry the ascend node's name; every other task that ran, the default node's.
2. The workers' own records. Each Celery worker logs "Executing workload" with the task
   instance's UUID, and writes the task's log file (dag_id=.../task_id=.../attempt=N.log)
   under its own AIRFLOW_HOME: every task instance's UUID and log file must be found at the
   expected worker and nowhere at the other.
3. The stand-ins' call logs. STANDIN_ATC_CALLS / STANDIN_MSAME_CALLS exist only in the
   ascend worker's environment: atc ran once and msame twice (on leased devices among 0, 1), in working
   folders under the ascend worker's private TMPDIR.
4. The task instances' `queue` (ascend for atc_convert/msame_infer, default otherwise),
   which is what the scheduler sent to the broker.

Artifacts cross workers only through S3: the workspace (ONNX from the default worker, om and
outputs from the ascend worker) is checked in the artifact bucket, and the published run
(latest.json, manifest, every manifest object with its sha256) in the publish bucket.

Needs PostgreSQL and Redis (tests/distributed/topology.py says where it looks). Without
them the test is skipped, saying why; with CGAN_REQUIRE_SERVICES=1 (CI) it fails instead.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.compose import ComposeUnavailable, compose_binary
from tests.distributed.compose_env import (
    COMPONENTS,
    SWAPPED,
    UNUSED_SECRETS,
    WORKER_COMPONENTS,
    differences,
    worker_holds,
)
from tests.distributed.topology import (
    REPO,
    CeleryStack,
    S3Target,
    Worker,
    check_services,
    require_services,
    run_healthcheck,
    services_required,
    tail,
)
from tests.published_packs import published_grids
from tests.standins.fixtures import TOOLKIT_VERSION, fake_toolkit_home

pytestmark = pytest.mark.slow

DAG_ID = "cgan_generation"
CONF = {"target": "ascend", "num_grids": 3, "devices": [0, 1], "seed": 1, "grids_per_shard": 2}
ASCEND_TASKS = {"atc_convert", "msame_infer"}
RAN = {("plan", -1), ("shards", -1), ("export_onnx", -1), ("input_bins", 0), ("input_bins", 1), ("choose_target", -1),
       ("atc_convert", -1), ("msame_infer", 0), ("msame_infer", 1), ("postprocess", -1), ("publish", -1),
       ("cleanup", -1), ("quality_gate", -1)}
RUN_DEADLINE_S = 12 * 60
DAG_PARSE_DEADLINE_S = 180


def make_cann_python(folder: Path, calls: Path) -> Path:
    """Stand-in of the CANN image's Python (CGAN_ASCEND_PYTHON): it logs each use and runs this
    venv's interpreter, because the stand-in atc/msame (`#!/usr/bin/env python3`) need onnxruntime."""
    folder.mkdir(parents=True)
    python = folder / "python3"
    python.write_text(f'#!/bin/sh\necho "$1" >> "{calls}"\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return python


# What a Celery worker does with its result backend (Redis): store a task's state.
STORE_RESULT = """
from airflow.providers.celery.executors.celery_executor import app
app.backend.store_result("cgan-npu-role-check", None, "SUCCESS")
print(app.backend.get_state("cgan-npu-role-check"))
"""


def live_log(port: str, relative: str, secret_key: str):
    """GET a task log from a worker's log server, signed as the api-server signs it."""
    import httpx
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    token = JWTGenerator(secret_key=secret_key, algorithm="HS512", private_key=None, issuer=None,
                         valid_for=30, audience="task-instance-logs").generate({"filename": relative})
    return httpx.get(f"http://127.0.0.1:{port}/log/{relative}", headers={"Authorization": token}, timeout=30)


def database_tables(stack: CeleryStack) -> set[str]:
    """The tables of the stack's scratch (metadata) database."""
    import psycopg

    from tests.distributed.topology import _libpq_url

    with psycopg.connect(_libpq_url(stack.db.url("postgresql")), connect_timeout=5) as conn:
        rows = conn.execute("select tablename from pg_tables where schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def sqlite_tables(path: Path) -> list[str]:
    import sqlite3

    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]


def read_calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def task_instances(stack: CeleryStack, run_id: str) -> list[dict]:
    body = stack.api.json("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
                          params={"limit": 100})
    return body["task_instances"]


def task_instances_or_none(stack: CeleryStack, run_id: str) -> list[dict] | None:
    try:
        return task_instances(stack, run_id)
    except Exception:  # noqa: BLE001 - the api-server may be the component that died
        return None


def ti_table(tis: list[dict]) -> str:
    rows = sorted(tis, key=lambda t: (t["task_id"], t["map_index"]))
    return "\n".join(f"  {t['task_id']}[{t['map_index']}] state={t['state']} queue={t['queue']} "
                     f"hostname={t['hostname']} try={t['try_number']}" for t in rows)


def report(stack: CeleryStack, tis: list[dict] | None = None) -> str:
    """What a person needs when the run went wrong: task states, failed task logs, component logs."""
    parts = []
    if tis:
        parts.append("task instances:\n" + ti_table(tis))
        for ti in tis:
            if ti["state"] in ("failed", "upstream_failed", "up_for_retry", "queued"):
                for queue in stack.worker_components:
                    for log in stack.task_log_files(queue):
                        if f"task_id={ti['task_id']}" in str(log):
                            parts.append(f"----- task log {log}\n{tail(log, 40)}")
    parts.append(stack.diagnostics())
    return "\n".join(parts)


def wait_for_dag(stack: CeleryStack) -> None:
    deadline = time.monotonic() + DAG_PARSE_DEADLINE_S
    while True:
        if stack.api.request("GET", f"/api/v2/dags/{DAG_ID}").status_code == 200:
            return
        for comp in stack.components:
            comp.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"{DAG_ID} was not parsed within {DAG_PARSE_DEADLINE_S} s\n{report(stack)}")
        time.sleep(2)


def wait_for_run(stack: CeleryStack, run_id: str) -> str:
    deadline = time.monotonic() + RUN_DEADLINE_S
    while True:
        state = stack.api.json("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            return state
        dead = [c.name for c in stack.components if not c.running()]
        if dead or time.monotonic() > deadline:
            why = f"{', '.join(dead)} exited" if dead else f"still {state} after {RUN_DEADLINE_S} s"
            pytest.fail(f"run {run_id}: {why}\n{report(stack, task_instances_or_none(stack, run_id))}")
        time.sleep(5)


@pytest.fixture(scope="session")
def services_or_skip():
    """Skip before the S3 server starts when a service is missing and not required."""
    _, problem = check_services()
    try:
        compose_binary()
    except ComposeUnavailable as exc:
        problem = "; ".join(p for p in (problem, str(exc)) if p)
    if problem and not services_required():
        pytest.skip(problem)


def test_ascend_run_on_celery_workers_routes_npu_tasks_and_publishes(services_or_skip, local_s3, tmp_path):
    services = require_services()  # a failure (not a setup error) when CGAN_REQUIRE_SERVICES=1
    started = time.monotonic()
    token = secrets.token_hex(3)
    s3 = local_s3["client"]
    artifact_bucket, publish_bucket = f"cgan-dist-art-{token}", f"cgan-dist-pub-{token}"
    for bucket in (artifact_bucket, publish_bucket):
        s3.create_bucket(Bucket=bucket)

    ascend_node, default_node = f"cgan-ascend-{token}", f"cgan-default-{token}"
    ascend_private = tmp_path / "ascend-node"  # only the ascend worker is told about this folder
    toolkit = fake_toolkit_home(ascend_private)
    atc_calls, msame_calls = ascend_private / "atc.jsonl", ascend_private / "msame.jsonl"
    python_calls = ascend_private / "cann-python.log"
    cann_python = make_cann_python(ascend_private / "cann-python" / "bin", python_calls)
    # CGAN_ASCEND_PYTHON: the Ascend image's ENV (docker/ascend-worker.Dockerfile); CGAN_MSAME=msame
    # and CGAN_ASCEND_TOOLKIT (swapped for the stand-in toolkit) come from the compose file
    ascend_env = {"CGAN_ASCEND_PYTHON": str(cann_python), "CGAN_NPU_DEVICES": "0,1", "CGAN_NPU_HOST": ascend_node,
                  "STANDIN_ATC_CALLS": str(atc_calls), "STANDIN_MSAME_CALLS": str(msame_calls)}
    log_bucket = f"cgan-dist-logs-{token}"
    s3.create_bucket(Bucket=log_bucket)
    target = S3Target(endpoint=local_s3["endpoint"], access_key=local_s3["access_key"],
                      secret_key=local_s3["secret_key"], artifact_root=f"s3://{artifact_bucket}/artifacts",
                      publish_bucket=publish_bucket, log_folder=f"s3://{log_bucket}/logs")
    workers = [Worker("default", default_node), Worker("ascend", ascend_node, extra_env=ascend_env)]

    with CeleryStack(services, tmp_path / "stack", s3=target, toolkit=str(toolkit), workers=workers) as stack:

        startup_s = time.monotonic() - started
        # one source of truth: each component runs with its compose service's environment
        started_envs = {c.name: c.env for c in stack.components}
        assert set(started_envs) == set(COMPONENTS) - {"cli"}
        for name, env in started_envs.items():
            assert differences(stack.compose.compose_env[name], env) == {}, name
            for key in SWAPPED.keys() & stack.compose.compose_env[name].keys():
                assert env[key] == stack.compose.env[name][key], (name, key)
            assert not any(v in json.dumps(env) for v in UNUSED_SECRETS.values()), name
        ascend_compose = stack.compose.compose_env["worker-ascend"]
        assert stack.compose.compose_env["scheduler"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(
            "postgresql+psycopg://")
        assert ascend_compose["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")
        # the Celery workers were started without any database setting (so Airflow's default: a
        # sqlite file in their own AIRFLOW_HOME), without the Fernet key and the JWT secret, and
        # with Celery's result backend on Redis, as docker-compose.yaml gives them
        for name in WORKER_COMPONENTS:
            assert worker_holds(started_envs[name], stack.deployment) == [], name
            assert started_envs[name]["AIRFLOW__CELERY__RESULT_BACKEND"] == stack.services.redis, name
        # the compose file's worker healthchecks pass against the live workers
        for queue in ("default", "ascend"):
            check = stack.healthcheck(queue)
            assert check.returncode == 0 and "pong" in check.stdout, (queue, check.stdout, check.stderr)
        # the default worker really could not run an Ascend task
        default_env = stack.worker_components["default"].env
        assert shutil.which("atc", path=default_env["PATH"]) is None
        assert shutil.which("msame", path=default_env["PATH"]) is None
        assert not any(k.startswith(("CGAN_ASCEND", "CGAN_MSAME", "STANDIN_", "ASCEND_")) for k in default_env)

        api = stack.api
        wait_for_dag(stack)
        api.json("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        run = api.json("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", ok=(200,),
                       json={"logical_date": None, "conf": CONF})
        run_id = run["dag_run_id"]
        assert run["conf"] == CONF
        state = wait_for_run(stack, run_id)
        tis = task_instances(stack, run_id)
        run_s = time.monotonic() - started - startup_s
        assert state == "success", f"run {run_id} {state}\n{report(stack, tis)}"

        by_key = {(t["task_id"], t["map_index"]): t for t in tis}
        ran = {k for k, t in by_key.items() if t["state"] == "success"}
        assert ran == RAN, ti_table(tis)
        assert by_key[("onnxruntime_infer", -1)]["state"] == "skipped", ti_table(tis)

        # workers without a database: the Celery results of every workload are in Redis, none went
        # to the metadata DB (Celery's DB backend would have made celery_taskmeta), and no worker
        # made or read a schema in the sqlite file Airflow falls back to
        assert len(stack.redis.client.keys("celery-task-meta-*")) >= len(ran)
        assert not {"celery_taskmeta", "celery_tasksetmeta"} & database_tables(stack)
        for comp in stack.worker_components.values():
            assert sqlite_tables(comp.home / "airflow.db") == [], comp.name

        # 1 + 4: hostname (per-worker node name) and queue, from the REST API
        node_of = {"ascend": ascend_node, "default": default_node}
        for key in ran:
            ti = by_key[key]
            queue = "ascend" if ti["task_id"] in ASCEND_TASKS else "default"
            assert ti["queue"] == queue, ti_table(tis)
            assert ti["hostname"] == node_of[queue], ti_table(tis)
        assert by_key[("msame_infer", 0)]["pool"] == "ascend_npu"

        # 2: each worker's own records: the workload UUIDs it executed, the task logs it wrote
        worker_log = {q: c.text() for q, c in stack.worker_components.items()}
        for key in ran:
            ti = by_key[key]
            queue = "ascend" if ti["task_id"] in ASCEND_TASKS else "default"
            other = "default" if queue == "ascend" else "ascend"
            assert ti["id"] in worker_log[queue], f"{key} ({ti['id']}) not in the {queue} worker's log"
            assert ti["id"] not in worker_log[other], f"{key} ({ti['id']}) in the {other} worker's log"
        for queue in ("default", "ascend"):
            written = set()
            for log in stack.task_log_files(queue):
                parts = {p.split("=", 1)[0]: p.split("=", 1)[1] for p in log.parts if "=" in p}
                assert parts["run_id"] == run_id
                written.add((parts["task_id"], int(parts.get("map_index", -1))))
            expected = {k for k in ran if (k[0] in ASCEND_TASKS) == (queue == "ascend")}
            assert written == expected, f"task logs under the {queue} worker's AIRFLOW_HOME: {sorted(written)}"

        # 3: the stand-ins ran on the ascend worker only (their call logs and working folders)
        ascend_tmp = stack.worker_components["ascend"].env["TMPDIR"]
        atc, msame = read_calls(atc_calls), read_calls(msame_calls)
        assert len(atc) == 1 and len(msame) == 2, (atc, msame)
        assert {c["argv"][c["argv"].index("--device") + 1] for c in msame} <= {"0", "1"}  # leased among devices
        assert all(c["cwd"].startswith(ascend_tmp) for c in atc + msame), (ascend_tmp, atc, msame)
        assert all(c["ascend_opp_path"] for c in msame)  # set_env.sh's environment reached msame
        # atc and msame started through CANN's Python (CGAN_ASCEND_PYTHON), not the venv's
        used = python_calls.read_text().split() if python_calls.exists() else []
        assert sum(Path(u).name == "atc" for u in used) == 1, used
        assert sum(Path(u).name == "msame" for u in used) == 2, used

        # remote task logs reached the log bucket through the cgan_s3 connection (uploaded when
        # the task process ends, which may be just after the run is marked successful)
        deadline = time.monotonic() + 90
        while True:
            logs = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=log_bucket)
                    for o in page.get("Contents", [])]
            missing = sorted({task for task, _ in ran if not any(f"/task_id={task}/" in k for k in logs)})
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert not missing, f"no remote log of {missing} in {log_bucket}: {logs}"

        # live logs: the ascend worker's log server accepts what the api-server signs with the
        # shared [api] secret_key (the compose file's AIRFLOW__API__SECRET_KEY), and 403s any other key
        log_file = next(f for f in stack.task_log_files("ascend") if "task_id=atc_convert" in str(f))
        relative = str(log_file.relative_to(stack.worker_components["ascend"].home / "logs"))
        port = stack.worker_components["ascend"].env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"]
        assert stack.worker_components["ascend"].env["AIRFLOW__API__SECRET_KEY"] == stack.deployment.api_secret_key
        for key, status in ((stack.deployment.api_secret_key, 200), (secrets.token_urlsafe(32), 403)):
            got = live_log(port, relative, key)
            assert got.status_code == status, (status, got.status_code, got.text[:300])
        assert live_log(port, relative, stack.deployment.api_secret_key).content == log_file.read_bytes()

        # an extra NPU host's worker: docker/compose.npu-host.yaml's environment and command, with no
        # database setting, Fernet key or JWT secret. It starts, answers its healthcheck, and writes
        # Celery results (its one use of a backend) to Redis.
        node = f"cgan-npuhost-{token}"
        npu_worker, npu_check = stack.start_npu_host_worker(node)
        assert worker_holds(npu_worker.env, stack.deployment) == []
        check = run_healthcheck(npu_check, npu_worker.env, node)
        assert check.returncode == 0 and "pong" in check.stdout, (check.stdout, check.stderr)
        stored = subprocess.run([sys.executable, "-c", STORE_RESULT], env=npu_worker.env, cwd=str(REPO),
                                capture_output=True, text=True, timeout=300)
        assert stored.returncode == 0 and stored.stdout.strip().endswith("SUCCESS"), stored.stderr[-2000:]

        # artifacts crossed workers through S3: the ONNX by content (default worker), the om in the
        # atc cache (ascend worker); the run's workspace was removed once the run was published
        stored = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=artifact_bucket)
                  for o in page.get("Contents", [])]
        for part, name in (("/models/", "/cgan.onnx"), ("/atc-cache/", "/model.om")):
            assert any(part in k and k.endswith(name) for k in stored), f"{part}*{name} missing: {stored}"
        assert not [k for k in stored if "/runs/" in k], stored

        # published: latest.json -> manifest -> every object, byte for byte
        latest = json.loads(s3.get_object(Bucket=publish_bucket, Key="latest.json")["Body"].read())
        manifest = json.loads(s3.get_object(Bucket=publish_bucket, Key=latest["manifest"])["Body"].read())
        for obj in manifest["objects"]:
            body = s3.get_object(Bucket=publish_bucket, Key=obj["key"])["Body"].read()
            assert hashlib.sha256(body).hexdigest() == obj["sha256"], obj["key"]
        # layout v2: the 3 grids in packs, each pack read with `tar`, its PNGs checked against its index
        assert sorted(published_grids(s3, publish_bucket, manifest, tmp_path / "read", grids=3)) == [0, 1, 2]
        keys = [o["key"] for o in manifest["objects"]]
        assert manifest["params"]["target"] == "ascend" and manifest["params"]["seed"] == 1
        assert manifest["model"]["om_sha256"] and manifest["tools"]["cann_toolkit"].startswith(TOOLKIT_VERSION)
        perf_key = next(k for k in keys if k.endswith("perf/perf.json"))
        perf = json.loads(s3.get_object(Bucket=publish_bucket, Key=perf_key)["Body"].read())
        assert perf["backend"] == "msame" and set(perf["devices"]) <= {f"npu:{d}@{ascend_node}" for d in (0, 1)}

    # everything was stopped and cleaned up
    assert stack.cleanup_notes == [], stack.cleanup_notes
    assert not any(c.running() for c in stack.components)
    assert not stack.db.exists()
    print(f"distributed run: stack up in {startup_s:.0f} s, run {run_id} in {run_s:.0f} s, "
          f"total {time.monotonic() - started:.0f} s")
