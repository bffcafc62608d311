"""Helpers for tests that run the real Airflow 3.3 and a real S3-compatible server (SeaweedFS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CGAN_", "AWS_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    })
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    for cmd in (["db", "migrate"], ["pools", "set", "ascend_npu", "1", "NPU slots (one per NPU)"]):
        subprocess.run([AIRFLOW, *cmd], env=env, check=True, capture_output=True, timeout=300)


def s3_connection(endpoint: str, access_key: str, secret_key: str) -> str:
    """AIRFLOW_CONN_<ID> value of an aws connection to an S3-compatible endpoint."""
    return json.dumps({
        "conn_type": "aws", "login": access_key, "password": secret_key,
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1",
                  "config_kwargs": {"s3": {"addressing_style": "path"}}},
    })


def bucket_env(home: Path, local_s3: dict, tmp_path: Path, bucket: str, **extra: str) -> dict[str, str]:
    """airflow_env of a DAG run publishing to a new `bucket` of the session's S3 server, its
    artifact root under tmp_path/artifacts, the `cgan_s3` connection to that server."""
    local_s3["client"].create_bucket(Bucket=bucket)
    conn = extra.pop("AIRFLOW_CONN_CGAN_S3", None) or s3_connection(
        local_s3["endpoint"], local_s3["access_key"], local_s3["secret_key"])
    return airflow_env(home, CGAN_ARTIFACT_ROOT=(tmp_path / "artifacts").as_uri(), CGAN_PUBLISH_BUCKET=bucket,
                       AIRFLOW_CONN_CGAN_S3=conn, **extra)


def dags_test(env: dict[str, str], conf: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, "dags", "test", "cgan_generation", "-c", json.dumps(conf)],
                          env=env, capture_output=True, text=True, timeout=timeout)
