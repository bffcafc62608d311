#!/usr/bin/env python3
"""`make demo`: one run of the cgan_generation DAG on this machine, end to end.

Starts a local S3-compatible server (SeaweedFS, data in var/s3), migrates a SQLite Airflow
home (var/airflow), runs `airflow dags test cgan_generation` with target cpu (ONNX Runtime;
no NPU is pretended), then copies the published grids to demo-output/ and stops the server.

    .venv/bin/python scripts/demo.py [--num-grids 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts import local_s3  # noqa: E402

VAR = REPO / "var"
BUCKET = "cgan"
LOCAL_KEYS = {"AWS_ACCESS_KEY_ID": "cgan-local", "AWS_SECRET_ACCESS_KEY": "cgan-local-secret"}


def airflow_env(endpoint: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(VAR / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "CGAN_ARTIFACT_ROOT": (VAR / "artifacts").as_uri(),
        "CGAN_PUBLISH_BUCKET": BUCKET,
        "AIRFLOW_CONN_CGAN_S3": json.dumps({
            "conn_type": "aws", "login": LOCAL_KEYS["AWS_ACCESS_KEY_ID"],
            "password": LOCAL_KEYS["AWS_SECRET_ACCESS_KEY"],
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }),
    })
    return env


def airflow(env: dict, *args: str, quiet: bool = True) -> None:
    cmd = [str(Path(sys.executable).with_name("airflow")), *args]
    proc = subprocess.run(cmd, env=env, capture_output=quiet, text=True)
    if proc.returncode != 0:
        if quiet:
            sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"`airflow {' '.join(args[:2])}` failed (exit {proc.returncode})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-grids", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "demo-output")
    args = parser.parse_args(argv)

    os.environ.update({k: os.environ.get(k, v) for k, v in LOCAL_KEYS.items()})
    LOCAL_KEYS.update({k: os.environ[k] for k in LOCAL_KEYS})
    print("Starting the local S3 server (SeaweedFS) ...", flush=True)
    server = local_s3.start(VAR / "s3")
    try:
        local_s3.ensure_bucket(server.endpoint, BUCKET)
        env = airflow_env(server.endpoint)
        print("Preparing Airflow (SQLite in var/airflow) ...", flush=True)
        airflow(env, "db", "migrate")
        airflow(env, "pools", "set", "ascend_npu", "1", "NPU slots (one per NPU)")
        conf = {"num_grids": args.num_grids, "seed": args.seed, "target": "cpu"}
        print(f"Running cgan_generation once with {json.dumps(conf)} ...", flush=True)
        airflow(env, "dags", "test", "cgan_generation", "-c", json.dumps(conf), quiet=False)
        return report(server.endpoint, args.out)
    finally:
        server.stop()


def report(endpoint: str, out: Path) -> int:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    latest = json.loads(client.get_object(Bucket=BUCKET, Key="latest.json")["Body"].read())
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=latest["manifest"])["Body"].read())
    prefix = latest["manifest"].rsplit("/", 1)[0]
    shutil.rmtree(out, ignore_errors=True)
    for obj in manifest["objects"]:
        target = out / obj["key"][len(prefix) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, obj["key"], str(target))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    summary = manifest.get("summary", {})
    print()
    print(f"Published: s3://{BUCKET}/{prefix}/ ({len(manifest['objects'])} objects, manifest last)")
    print(f"Grids (row = noise vector, column = digit 0..9): {out / 'grids'}/")
    print(f"Quality: {out / 'quality' / 'quality.json'} (label accuracy {summary.get('label_accuracy')}, "
          f"parity max abs error {summary.get('parity_max_abs_err')})")
    print(f"Perf: {out / 'perf' / 'perf.json'} ({summary.get('grids_per_s')} grids/s on the CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
