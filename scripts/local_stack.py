#!/usr/bin/env python3
"""`make up` / `make down`: Airflow standalone + the local S3 server on this machine.

    .venv/bin/python scripts/local_stack.py up     # UI on http://127.0.0.1:8080, DAG unpaused
    .venv/bin/python scripts/local_stack.py down

State lives in var/ (git-ignored): var/airflow (SQLite, logs, generated admin password),
var/s3 (object data), var/*.pid. The environment of both commands comes from `local_env()`,
which `make demo` uses too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts import local_s3  # noqa: E402

VAR = REPO / "var"
BUCKET = "cgan"
S3_PORT = 8333
API_PORT = 8080
LOCAL_KEYS = {"AWS_ACCESS_KEY_ID": "cgan-local", "AWS_SECRET_ACCESS_KEY": "cgan-local-secret"}
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def local_keys() -> dict[str, str]:
    """The local server's credentials: from the environment, else the documented local pair."""
    return {k: os.environ.get(k) or v for k, v in LOCAL_KEYS.items()}


def local_env(endpoint: str) -> dict[str, str]:
    keys = local_keys()
    env = dict(os.environ)
    env.update(keys)
    env.update({
        "AIRFLOW_HOME": str(VAR / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",  # as docker-compose.yaml, which says why
        "AIRFLOW__API__PORT": str(API_PORT),
        # Airflow's [api] host defaults to 0.0.0.0 (every interface): the local stack serves this machine only
        "AIRFLOW__API__HOST": env.get("CGAN_UI_HOST") or "127.0.0.1",
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "CGAN_ARTIFACT_ROOT": env.get("CGAN_ARTIFACT_ROOT") or (VAR / "artifacts").as_uri(),
        "CGAN_PUBLISH_BUCKET": BUCKET,
        "AIRFLOW_CONN_CGAN_S3": json.dumps({
            "conn_type": "aws", "login": keys["AWS_ACCESS_KEY_ID"], "password": keys["AWS_SECRET_ACCESS_KEY"],
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }),
    })
    return env


def airflow(env: dict, *args: str, quiet: bool = True, log: Path | None = None) -> None:
    """Run an airflow command; quiet: its output only on failure; log: its whole output into that file."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            proc = subprocess.run([AIRFLOW, *args], env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            sys.stderr.write(log.read_text()[-5000:])
            raise SystemExit(f"`airflow {' '.join(args[:2])}` failed (exit {proc.returncode}); its whole log: {log}")
        return
    proc = subprocess.run([AIRFLOW, *args], env=env, capture_output=quiet, text=True)
    if proc.returncode != 0:
        if quiet:
            sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"`airflow {' '.join(args[:2])}` failed (exit {proc.returncode})")


def prepare_airflow(env: dict) -> None:
    airflow(env, "db", "migrate")
    airflow(env, "pools", "set", "ascend_npu", "1", "NPU slots (one per NPU)")


def start_s3(port: int | None = S3_PORT) -> local_s3.LocalS3:
    os.environ.update(local_keys())
    server = local_s3.start(VAR / "s3", port)
    local_s3.ensure_bucket(server.endpoint, BUCKET)
    return server


def up() -> int:
    if (VAR / "airflow.pid").exists():
        raise SystemExit("the local stack is already up (var/airflow.pid exists); run `make down` first")
    server = start_s3()
    (VAR / "s3.pid").write_text(str(server.process.pid))
    env = local_env(server.endpoint)
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
    prepare_airflow(env)
    log = open(VAR / "airflow-standalone.log", "ab")
    proc = subprocess.Popen([AIRFLOW, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    (VAR / "airflow.pid").write_text(str(proc.pid))
    url = f"http://127.0.0.1:{API_PORT}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(1)
    else:
        down()
        raise SystemExit("Airflow did not answer within 180 s; see var/airflow-standalone.log")
    airflow(env, "dags", "reserialize")
    airflow(env, "dags", "unpause", "cgan_generation")
    passwords = VAR / "airflow" / "simple_auth_manager_passwords.json.generated"
    password = json.loads(passwords.read_text()).get("admin") if passwords.exists() else "(see the log)"
    print(f"Airflow UI:  {url}  (user admin, password in {passwords})")
    print(f"             password: {password}")
    print(f"Object store: {server.endpoint} (bucket {BUCKET}); DAG cgan_generation is unpaused.")
    print("Stop everything with `make down`.")
    return 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def down() -> int:
    pid_file = VAR / "airflow.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        for child in _children(pid):  # standalone's components first, then standalone itself
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(5)
        local_s3.stop_pid(pid, timeout=20)
        pid_file.unlink()
        print("Airflow standalone stopped")
    s3_pid = VAR / "s3.pid"
    if s3_pid.exists():
        local_s3.stop_pid(int(s3_pid.read_text()))
        s3_pid.unlink()
        print("local S3 server stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args(argv)
    VAR.mkdir(exist_ok=True)
    return up() if args.command == "up" else down()


if __name__ == "__main__":
    raise SystemExit(main())
