"""The checkpoint trigger and the late-run alert under the real Airflow 3.3 (no mocked scheduler):
scheduler (LocalExecutor), dag-processor, api-server and triggerer on SQLite, started the way
scripts/local_stack.py / scripts/bench_scheduler.py start them, with the session's SeaweedFS as
the object store, a real local webhook receiver and a real local SMTP server.

What it proves:
- `cgan register-checkpoint` (a real subprocess, the REST API: /auth/token, GET /api/v2/assets,
  POST /api/v2/assets/events) makes the scheduler create an asset-triggered run, which runs and
  publishes with that checkpoint: the plan's XCom and the published manifest name it;
- with CGAN_LATE_AFTER_MINUTES tiny, the Deadline Alert's callback runs in the triggerer and the
  late-run alert reaches the webhook and the SMTP server, naming the run, with no credential;
- an event posted straight to the REST API (the curl of docs/assets.md) with a checkpoint outside
  CGAN_CHECKPOINT_ROOTS starts a run that `plan` refuses with a clear message, and the failure
  alert (FailureAlert) reaches the webhook and the e-mail: run, task, reason, log link;
- the command's errors against the real api-server: a wrong password (401), an unknown asset.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.airflow_stack import AIRFLOW, REPO, airflow_env, migrate, s3_connection

pytestmark = pytest.mark.slow

DAG_ID = "cgan_generation"
BUCKET = "ckpttrigger"
CGAN = str(Path(sys.executable).with_name("cgan"))
USER = "ops"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(ready, timeout: float, what: str, logs: Path):
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = ready()
            if value:
                return value
        except (OSError, httpx.TransportError):
            pass
        time.sleep(1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(logs.glob("*.log")))
    raise AssertionError(f"{what} not within {timeout:.0f} s\n{tails}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, local_s3):
    """The real Airflow components + receivers; yields a dict with the REST client and what they got."""
    import httpx

    from tests.alert_receiver import webhook_receiver
    from tests.smtp_receiver import smtp_receiver

    root = tmp_path_factory.mktemp("ckpt_trigger")
    local_s3["client"].create_bucket(Bucket=BUCKET)
    (root / "ckpts").mkdir()
    password = secrets.token_hex(12)
    (root / "passwords.json").write_text(json.dumps({USER: password}))
    port = _free_port()
    procs: list[subprocess.Popen] = []
    with webhook_receiver() as (hook, hooked), smtp_receiver() as (smtp_host, smtp_port, mails):
        env = airflow_env(
            root / "airflow",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(root / "passwords.json"),
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(port),
            AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="5",
            AIRFLOW_CONN_CGAN_S3=s3_connection(local_s3["endpoint"], local_s3["access_key"], local_s3["secret_key"]),
            CGAN_ARTIFACT_ROOT=(root / "artifacts").as_uri(),
            CGAN_PUBLISH_BUCKET=BUCKET,
            CGAN_SCHEDULE="0 0 29 2 *",  # no nightly run during the test: only the asset-triggered ones
            CGAN_NUM_GRIDS="3",
            CGAN_RETRY_DELAY_S="1",
            CGAN_CHECKPOINT_ROOTS=f"models,{root / 'ckpts'}",
            CGAN_LATE_AFTER_MINUTES="0.05",  # 3 s after it was queued: every run here is late
            CGAN_ALERT_WEBHOOK_URL=hook,
            CGAN_ALERT_EMAIL_TO="oncall@example.test",
            CGAN_ALERT_SMTP_HOST=smtp_host,
            CGAN_ALERT_SMTP_PORT=str(smtp_port),
        )
        migrate(env)
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        try:
            for component in (["api-server", "--port", str(port)], ["scheduler"], ["dag-processor"], ["triggerer"]):
                log = open(root / f"{component[0]}.log", "ab")  # noqa: SIM115 - closed with the process
                procs.append(subprocess.Popen([AIRFLOW, *component], env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            _wait(lambda: http.get("/api/v2/monitor/health").status_code == 200, 300, "the api-server", root)
            token = http.post("/auth/token", json={"username": USER, "password": password})
            token.raise_for_status()
            http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            _wait(lambda: http.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 300, "the DAG parsed", root)
            assert http.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
            yield {"root": root, "env": env, "http": http, "url": f"http://127.0.0.1:{port}", "password": password,
                   "hooked": hooked, "mails": mails, "s3": local_s3}
        finally:
            for proc in procs:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            http.close()


def register(stack, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = dict(stack["env"], CGAN_AIRFLOW_USER=USER,
               CGAN_AIRFLOW_PASSWORD=stack["password"] if password is None else password,
               CGAN_AIRFLOW_API_URL=stack["url"])
    return subprocess.run([CGAN, "register-checkpoint", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def api(stack, path: str, **params):
    resp = stack["http"].get(path, params=params)
    assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:500]}"
    return resp.json()


def asset_runs(stack) -> list[dict]:
    runs = api(stack, f"/api/v2/dags/{DAG_ID}/dagRuns", order_by="id", limit=50)["dag_runs"]
    return [r for r in runs if r["run_type"] == "asset_triggered"]


def wait_for_run(stack, known: set[str], timeout: float = 900) -> dict:
    """The next asset-triggered run (not in `known`), once finished."""
    new = _wait(lambda: [r for r in asset_runs(stack) if r["dag_run_id"] not in known], 120,
                "an asset-triggered run", stack["root"])
    run_id = new[0]["dag_run_id"]
    return _wait(lambda: (lambda r: r if r["state"] in ("success", "failed") else None)(
        api(stack, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")), timeout, f"run {run_id} finished", stack["root"])


def xcom(stack, run_id: str, task_id: str, key: str):
    value = api(stack, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")["value"]
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{\"" else value


def credentials(stack) -> list[str]:
    return [stack["password"], stack["s3"]["secret_key"], stack["http"].headers["Authorization"].split()[1]]


def test_a_registered_checkpoint_starts_a_run_with_it_and_a_late_run_is_alerted(stack):
    checkpoint = stack["root"] / "ckpts" / "generator_v2.pth"
    shutil.copy(REPO / "models" / "cgan_generator.pth", checkpoint)
    done = register(stack, str(checkpoint))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"registered {checkpoint}: event " in out and "is a generator state_dict (C=1)" in out
    assert not any(c in out for c in credentials(stack))

    run = wait_for_run(stack, set())
    run_id = run["dag_run_id"]
    assert run["state"] == "success", run
    assert xcom(stack, run_id, "plan", "checkpoint") == str(checkpoint)
    assert xcom(stack, run_id, "plan", "checkpoint_source").startswith("the cgan_checkpoint asset event of ")
    client = stack["s3"]["client"]
    latest = json.loads(client.get_object(Bucket=BUCKET, Key="latest.json")["Body"].read())
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=latest["manifest"])["Body"].read())
    assert manifest["params"]["checkpoint"] == str(checkpoint), manifest["params"]
    assert manifest["summary"]["grids"] == 3

    # the Deadline Alert (3 s after queued) ran in the triggerer: webhook and e-mail, naming the run
    late = _wait(lambda: [a for a in stack["hooked"] if a["run_id"] == run_id and "is late" in a["subject"]],
                 60, "the late-run webhook alert", stack["root"])
    assert "has not finished by its deadline" in late[0]["reason"] and "(0.05 min after it was queued)" in \
        late[0]["reason"]
    assert late[0]["log_url"] == f"{stack['url']}/dags/{DAG_ID}/runs/{run_id.replace(':', '%3A').replace('+', '%2B')}"
    mails = _wait(lambda: [m for m in stack["mails"] if run_id in m["Subject"]], 60, "the late-run e-mail",
                  stack["root"])
    assert "has not finished by its deadline" in mails[0].get_payload(decode=True).decode()
    assert not any(c in json.dumps(stack["hooked"]) + "".join(m.as_string() for m in stack["mails"])
                   for c in credentials(stack))


def test_an_event_with_a_checkpoint_outside_the_roots_is_refused_by_plan(stack):
    known = {r["dag_run_id"] for r in asset_runs(stack)}
    http = stack["http"]
    assets = api(stack, "/api/v2/assets", name_pattern="cgan_checkpoint")["assets"]
    asset_id = [a["id"] for a in assets if a["name"] == "cgan_checkpoint"][0]
    # the curl of docs/assets.md: POST /api/v2/assets/events with the checkpoint in the extra
    posted = http.post("/api/v2/assets/events",
                       json={"asset_id": asset_id, "extra": {"checkpoint": "s3://someone-elses-bucket/g.pth"}})
    assert posted.status_code == 200, posted.text
    run = wait_for_run(stack, known, timeout=300)
    run_id = run["dag_run_id"]
    assert run["state"] == "failed"
    tis = api(stack, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert {t["task_id"]: t["state"] for t in tis}["plan"] == "failed"
    assert not [t for t in tis if t["task_id"] == "export_onnx" and t["state"] == "success"]
    alert = _wait(lambda: [a for a in stack["hooked"] if a["run_id"] == run_id and a["task_id"] == "plan"],
                  60, "the failure alert", stack["root"])[0]
    assert "the cgan_checkpoint asset event of " in alert["reason"]
    assert "checkpoint 's3://someone-elses-bucket/g.pth' is outside the checkpoint roots" in alert["reason"]
    assert "CGAN_CHECKPOINT_ROOTS" in alert["reason"] and "plan" in alert["log_url"] and alert["log_url"].startswith(
        stack["url"])
    mail = _wait(lambda: [m for m in stack["mails"] if run_id in m["Subject"] and "failed at plan" in m["Subject"]],
                 60, "the failure e-mail", stack["root"])[0]
    body = mail.get_payload(decode=True).decode()
    assert "is outside the checkpoint roots" in body and f"log: {alert['log_url']}" in body
    assert not any(c in json.dumps(alert) + mail.as_string() for c in credentials(stack))


def test_register_errors_against_the_real_api_server(stack):
    wrong = register(stack, "models/cgan_generator.pth", password="not-the-password")
    out = wrong.stdout + wrong.stderr
    assert wrong.returncode == 2
    assert f"POST {stack['url']}/auth/token: HTTP 401: Airflow refused the user 'ops' or its password" in out
    assert "check CGAN_AIRFLOW_USER and CGAN_AIRFLOW_PASSWORD" in out and "not-the-password" not in out

    unknown = register(stack, "models/cgan_generator.pth", "--asset", "no_such_asset")
    out = unknown.stdout + unknown.stderr
    assert unknown.returncode == 2
    assert "HTTP 200 but no asset named 'no_such_asset'" in out and stack["url"] in out
    assert not any(c in out for c in credentials(stack))


def _trigger(stack, run_id: str, logical_date: str | None) -> None:
    posted = stack["http"].post(f"/api/v2/dags/{DAG_ID}/dagRuns",
                                json={"dag_run_id": run_id, "logical_date": logical_date, "conf": {"num_grids": 3}})
    assert posted.status_code == 200, posted.text


def _finished(stack, run_id: str) -> dict:
    from urllib.parse import quote

    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"
    return _wait(lambda: (lambda r: r if r["state"] in ("success", "failed") else None)(api(stack, path)), 600,
                 f"run {run_id} finished", stack["root"])


def test_chosen_run_ids_and_a_future_logical_date_through_the_rest_api(stack):
    """What anyone who may trigger the DAG can type (the form's Run ID, POST dagRuns): a run id
    that used to share Airflow's own manual id's key gets a key of its own, so neither run's
    published results replace the other's; a run dated 2099 is never started by the scheduler
    (and plan refuses it where it is), so it can never freeze latest.json."""
    from cgan.run.plan import safe_run_id

    client = stack["s3"]["client"]
    ids = ["manual__2026-11-25T10:00:00+00:00", "manual__2026-11-25T10-00-00-00-00"]  # one key before
    for run_id in ids:
        _trigger(stack, run_id, None)
    for run_id in ids:
        assert _finished(stack, run_id)["state"] == "success"
    keys = [safe_run_id(i) for i in ids]
    assert len(set(keys)) == 2
    for run_id, key in zip(ids, keys, strict=True):
        manifest = json.loads(client.get_object(Bucket=BUCKET, Key=f"runs/{key}/manifest.json")["Body"].read())
        assert manifest["run_id"] == run_id and manifest["grids"] == 3
    latest = client.get_object(Bucket=BUCKET, Key="latest.json")["Body"].read()

    # Airflow itself holds a run dated in the future queued ([scheduler] allow_trigger_in_future
    # is off): it never starts, so it cannot publish; where it does start (that option on, or
    # `airflow dags test`), plan refuses it (tests/reliability/test_dag_faults.py)
    _trigger(stack, "from-the-future", "2099-01-01T00:00:00Z")
    _wait(lambda: "Logical date is in future" in (stack["root"] / "scheduler.log").read_text(errors="replace"), 120,
          "the scheduler holding the future run", stack["root"])
    time.sleep(10)  # time enough for a plan task to have run, were it let
    assert api(stack, f"/api/v2/dags/{DAG_ID}/dagRuns/from-the-future")["state"] in ("queued", "running")
    tis = api(stack, f"/api/v2/dags/{DAG_ID}/dagRuns/from-the-future/taskInstances")["task_instances"]
    assert not [t for t in tis if t["state"] in ("running", "success", "failed")], tis
    stopped = stack["http"].patch(f"/api/v2/dags/{DAG_ID}/dagRuns/from-the-future", json={"state": "failed"})
    assert stopped.status_code == 200, stopped.text  # stopped, so it cannot hold the stack's slots
    assert client.get_object(Bucket=BUCKET, Key="latest.json")["Body"].read() == latest
