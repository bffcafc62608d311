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
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.local_stack import (  # noqa: E402
    BUCKET,
    S3_PORT,
    VAR,
    airflow,
    local_env,
    prepare_airflow,
    start_s3,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-grids", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "demo-output")
    args = parser.parse_args(argv)

    server = None
    if (VAR / "s3.pid").exists():  # `make up` is running: publish to its server
        endpoint = f"http://127.0.0.1:{S3_PORT}"
    else:
        print("Starting the local S3 server (SeaweedFS, data in var/s3) ...", flush=True)
        server = start_s3()
        endpoint = server.endpoint
    try:
        env = local_env(endpoint)
        print("Preparing Airflow (SQLite in var/airflow) ...", flush=True)
        prepare_airflow(env)
        conf = {"num_grids": args.num_grids, "seed": args.seed, "target": "cpu"}
        log = VAR / "demo-airflow.log"
        print(f"Running cgan_generation once with {json.dumps(conf)} (Airflow's log: {log}) ...", flush=True)
        start = time.monotonic()
        airflow(env, "dags", "test", "cgan_generation", "-c", json.dumps(conf), log=log)
        print(f"The DAG run succeeded in {time.monotonic() - start:.1f} s: plan, export, bins, inference, "
              "postprocess, publish, quality gate, cleanup.")
        report(endpoint, args.out.resolve())
        return report_storage(env["CGAN_ARTIFACT_ROOT"])
    finally:
        if server is not None:
            server.stop()


def report(endpoint: str, out: Path) -> int:
    import boto3

    from cgan.layout.packs import grid_of_member, member_name, read_members
    from cgan.layout.published import LATEST_KEY, PERF_KEY, QUALITY_KEY, manifest_packs, relative_objects
    from cgan.storage.files import sha256_file
    from scripts.local_stack import local_keys

    keys = local_keys()
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])
    latest = json.loads(client.get_object(Bucket=BUCKET, Key=LATEST_KEY)["Body"].read())
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=latest["manifest"])["Body"].read())
    prefix = latest["manifest"].rsplit("/", 1)[0]
    shutil.rmtree(out, ignore_errors=True)
    for rel, (key, _) in relative_objects(manifest, prefix).items():  # perf/..., quality/...
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, key, str(target))
    grids = out / "grids"
    grids.mkdir(parents=True)
    for pack in manifest_packs(manifest, prefix):  # each a tar of PNGs: what `aws s3 cp` + `tar -x` give too
        tar = out / "packs" / pack["key"].rsplit("/", 1)[1]
        tar.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, pack["key"], str(tar))
        if tar.stat().st_size != pack["size"] or sha256_file(tar) != pack["sha256"]:
            raise SystemExit(f"s3://{BUCKET}/{pack['key']} does not match the manifest (size, sha256)")
        for name, data in read_members(tar):
            grid = grid_of_member(name)
            if grid is None or not pack["first"] <= grid < pack["first"] + pack["count"]:
                raise SystemExit(f"{tar.name} holds {name!r}, not a grid of the pack")
            (grids / member_name(grid)).write_bytes(data)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    summary = manifest.get("summary", {})
    print()
    print(f"Published: s3://{BUCKET}/{prefix}/ ({manifest['grids']} grids in {len(manifest['packs'])} pack(s), "
          f"{len(manifest['objects'])} report object(s), manifest last)")
    print(f"Packs (tar of PNGs, WebDataset-style): {out / 'packs'}/")
    print(f"Grids (row = noise vector, column = digit 0..9): {grids}/")
    print(f"Quality: {out / QUALITY_KEY} (label accuracy {summary.get('label_accuracy')}, "
          f"parity max abs error {summary.get('parity_max_abs_err')})")
    print(f"Perf: {out / PERF_KEY} ({summary.get('grids_per_s')} grids/s on the CPU)")
    print("Gallery: `make up`, then http://127.0.0.1:8080/cgan-gallery/ (the Airflow UI's Browse menu)")
    return 0


def report_storage(artifact_root: str) -> int:
    """What the run left in the artifact store: its workspace is removed once it is published."""
    from cgan.layout.published import RUNS_PREFIX
    from cgan.storage.keys import join
    from cgan.storage.store import open_store

    if artifact_root.startswith("file:"):
        store = open_store(artifact_root)
        objects, size = store.usage()
        runs = store.usage(join(RUNS_PREFIX))
        print(f"Artifact store {artifact_root}: {size / 1e6:.1f} MB in {objects} objects (the model store; "
              f"{runs[0]} objects of unpublished runs' workspaces, kept for inspection)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
