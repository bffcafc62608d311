"""Load: one active run at a time, retry settings, and a large run through the real DAG with the
same guarantees as a small one (manifest complete, every sha256 matches)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.airflow_stack import REPO, airflow_env, bucket_env, dags_test, s3_connection
from tests.reliability.conftest import check_manifest_complete, get

PARSE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["cgan_generation"]
print("RESULT" + json.dumps({
    "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
    "retry": {t.task_id: [t.retries, t.retry_delay.total_seconds()] for t in dag.tasks},
    "params": sorted(dag.params),
    "templated": {t.task_id: {f: str(getattr(t, f, "")) for f in t.template_fields} for t in dag.tasks},
    "aws_conn_ids": sorted({getattr(t, "aws_conn_id", None) or "" for t in dag.tasks} - {""}),
}))
"""


def parse_dag(tmp_path, **extra) -> dict:
    env = airflow_env(tmp_path, **extra)
    proc = subprocess.run([sys.executable, "-c", PARSE, str(REPO / "dags")], env=env, capture_output=True,
                          text=True, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    return json.loads(line[0][len("RESULT"):])


def test_one_run_at_a_time_retry_settings_and_no_credentials_in_the_dag(tmp_path):
    default = parse_dag(tmp_path / "a")
    fast = parse_dag(tmp_path / "b", CGAN_RETRY_DELAY_S="1", AWS_SECRET_ACCESS_KEY="env-secret-xyz",
                     AIRFLOW_CONN_CGAN_S3=s3_connection("http://127.0.0.1:1", "k", "conn-secret-xyz"))
    assert default["max_active_runs"] == 1 and default["catchup"] is False  # back-to-back runs queue
    assert default["retry"]["export_onnx"] == [2, 30.0] and default["retry"]["publish"] == [2, 30.0]
    assert default["retry"]["plan"][0] == 0  # checking input is not worth a retry
    assert fast["retry"]["publish"] == [2, 1.0]
    # credentials come only from the connection (by id) or the environment: never a param or an argument
    assert not [p for p in default["params"] if any(w in p.lower() for w in ("key", "secret", "password", "token"))]
    assert fast["aws_conn_ids"] == ["cgan_s3"]
    assert "secret-xyz" not in json.dumps(fast["templated"])


IMPORT_ERRORS = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
print("RESULT" + json.dumps(list(DagBag(dag_folder=sys.argv[1]).import_errors.values())))
"""


def test_a_bad_retry_delay_is_refused_when_the_dag_is_parsed(tmp_path):
    env = airflow_env(tmp_path, CGAN_RETRY_DELAY_S="soon")
    proc = subprocess.run([sys.executable, "-c", IMPORT_ERRORS, str(REPO / "dags")], env=env, capture_output=True,
                          text=True, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    (error,) = json.loads(line[0][len("RESULT"):])
    assert "CGAN_RETRY_DELAY_S='soon' must be a number of seconds in 0..3600" in error


LARGE = {"num_grids": 2000, "grids_per_shard": 500, "seed": 2026, "target": "cpu", "threads": 1}


@pytest.mark.slow
def test_large_run_publishes_completely(airflow_home, local_s3, tmp_path):
    client = local_s3["client"]
    env = bucket_env(airflow_home, local_s3, tmp_path, "rel-large")
    start = time.monotonic()
    proc = dags_test(env, LARGE, timeout=900)
    wall = time.monotonic() - start
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    latest = json.loads(get(client, "rel-large", "latest.json"))
    manifest = check_manifest_complete(client, "rel-large", latest["manifest"])
    assert manifest["grids"] == 2000  # every PNG checked against its pack's index by check_manifest_complete
    assert [(p["first"], p["count"]) for p in manifest["packs"]] == [(0, 500), (500, 500), (1000, 500), (1500, 500)]
    keys = [o["key"] for o in manifest["objects"]]
    assert sum(k.endswith(".perf.json") and "/perf/shard_" in k for k in keys) == 4
    assert manifest["summary"]["grids"] == 2000 and manifest["params"]["num_grids"] == 2000
    perf = json.loads(get(client, "rel-large", [k for k in keys if k.endswith("perf/perf.json")][0]))
    assert perf["grids"] == 2000 and perf["shards"] == 4
    own = [k for k in keys if k.startswith(manifest["root"] + "/")]  # uploaded by publish: perf/, quality/
    assert own == keys and not [p for p in manifest["packs"] if p["key"].startswith(manifest["root"] + "/")]
    assert "grids 2000/2000" in log and f"uploaded {len(own)}/{len(own)} object(s) of the workspace" in log
    assert "4 pack(s) staged by the inference tasks are in the bucket" in log  # the packs were staged
    assert local_s3["secret_key"] not in log
    print(f"large run: 2000 grids in {wall:.0f} s")  # shown with -s; the budget is a few minutes
    assert wall < 600
