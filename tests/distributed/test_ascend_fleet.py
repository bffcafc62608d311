"""An Ascend fleet proven on this machine: two Ascend hosts on the `ascend` queue, NPUs leased
on the worker, a run with more shards than NPUs, and a SIGKILLed NPU task.

The stack of test_celery_topology.py (PostgreSQL, Redis, api-server, scheduler (CeleryExecutor),
dag-processor, triggerer, SeaweedFS; every component with its docker-compose.yaml environment),
with two Ascend workers standing for two hosts:

- host A: the compose file's `airflow-worker-ascend`, CGAN_NPU_DEVICES=0,1;
- host B: docker/compose.npu-host.yaml's worker (an extra NPU host, with no database setting,
  Fernet key or JWT secret), CGAN_NPU_DEVICES=0,1,2.

Both run `-c 3` (CGAN_NPU_COUNT), more than host A's NPUs, so leases really contend; the
`ascend_npu` pool has 5 slots (the fleet's NPUs). Each host has its own lock folder and its own
stand-in NPU state (STANDIN_NPU_STATE_DIR): the msame stand-in refuses a device its host lacks
(STANDIN_MSAME_DEVICES) and fails when two processes use one device at once, and logs every
device use (STANDIN_NPU_USAGE_LOG). Distinct host names: CGAN_NPU_HOST / STANDIN_NPU_HOST and the
Celery node name (CGAN_TEST_NODE), since both workers run on one machine. No NPU runs.

The run (12 grids in shards of 2: 6 shards for 5 NPUs) must succeed and show: every shard ran on a
device of the host whose worker ran it; no device was used twice at once; an NPU task SIGKILLed
while it held a lease left its device free (the retry ran, every lock is free afterwards); the
published grids are byte-identical to a one-host run of the same seed (the cgan library with the
same stand-in msame on one device, in this process).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.distributed.compose_env import NPU_HOST_COMPONENT, npu_lock_dir
from tests.distributed.test_celery_topology import (  # noqa: F401 (services_or_skip: a fixture)
    DAG_ID,
    make_cann_python,
    report,
    services_or_skip,
    task_instances,
    ti_table,
    wait_for_dag,
    wait_for_run,
)
from tests.distributed.topology import CeleryStack, S3Target, Worker, require_services
from tests.published_packs import published_grids
from tests.standins.fixtures import STANDINS, fake_toolkit_home

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("services_or_skip")]

CONF = {"target": "ascend", "num_grids": 12, "grids_per_shard": 2, "seed": 3}
SHARDS = 6
HOSTS = {"a": [0, 1], "b": [0, 1, 2]}


def host_env(private: Path, node: str, devices: list[int], usage: Path) -> dict[str, str]:
    private.mkdir(parents=True, exist_ok=True)
    ids = ",".join(map(str, devices))
    return {
        "CGAN_ASCEND_PYTHON": str(make_cann_python(private / "cann-python" / "bin", private / "cann-python.log")),
        "CGAN_NPU_DEVICES": ids, "CGAN_NPU_HOST": node,  # CGAN_NPU_LOCK_DIR: the compose file's, one per host
        "STANDIN_MSAME_DEVICES": ids, "STANDIN_NPU_HOST": node, "STANDIN_NPU_STATE_DIR": str(private / "npu"),
        "STANDIN_NPU_USAGE_LOG": str(usage), "STANDIN_MSAME_DELAY_S": "2",
        # an npu-smi table of 310P3 devices 0..7 (four Atlas 300I Duo cards): CGAN_NPU_DEVICES must
        # name devices it lists, and the lease checks the om's chip (Ascend310P3) against it
        "STANDIN_NPU_SMI_SAMPLE": "duo_x4.txt",
        "STANDIN_MSAME_CALLS": str(private / "msame.jsonl"), "STANDIN_ATC_CALLS": str(private / "atc.jsonl"),
    }


def held_locks(folder: Path) -> dict[str, int]:
    """{lock file name: pid written in it} for every NPU lock some process holds now."""
    held = {}
    for path in sorted(folder.glob("npu-*.lock")) if folder.is_dir() else []:
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = path.read_text().strip()
            held[path.name] = int(text) if text.isdigit() else -1
        finally:
            os.close(fd)
    return held


class Killer(threading.Thread):
    """SIGKILL the first NPU task process seen holding a lease on host A (once)."""

    def __init__(self, locks: Path):
        super().__init__(daemon=True)
        self.locks, self.stop, self.killed = locks, threading.Event(), None

    def run(self):
        while not self.stop.is_set() and self.killed is None:
            for device, pid in held_locks(self.locks).items():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
                if pid > 0 and b"msame" not in cmdline and cmdline:  # the task process, not its msame
                    os.kill(pid, signal.SIGKILL)
                    self.killed = {"device": device, "pid": pid, "at": time.time()}
                    return
            time.sleep(0.2)


def one_host_grids(tmp: Path, seed: int, num_grids: int) -> dict[str, str]:
    """grid PNG name -> sha256 of a one-host run: the library with the stand-in msame on device 0."""
    from cgan.ascend.msame import run_msame
    from cgan.recipe.bins import write_bins
    from cgan.recipe.export import export_onnx
    from cgan.recipe.grids import grid_array, png_bytes
    from cgan.recipe.outputs import read_output_bin
    from cgan.run.plan import DEFAULT_CHECKPOINT, resolve_local_checkpoint

    onnx = export_onnx(resolve_local_checkpoint(DEFAULT_CHECKPOINT), tmp / "cgan.onnx").onnx_path
    om = tmp / "model" / "cgan.om"
    om.parent.mkdir()
    om.write_bytes(Path(onnx).read_bytes())  # what the stand-in atc makes
    write_bins(tmp / "bins", num_grids, seed)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STANDIN_", "CGAN_NPU"))}
    env["PATH"] = f"{STANDINS}:{Path(sys.executable).parent}:{env['PATH']}"
    run = run_msame(om, tmp / "bins", tmp / "out", device=0, msame=str(STANDINS / "msame"), env=env, npu_smi=None)
    return {f"{p.name.split('_output_')[0]}.png": hashlib.sha256(png_bytes(grid_array(read_output_bin(p)))).hexdigest()
            for p in run.outputs}


def test_two_ascend_hosts_lease_their_own_npus(local_s3, tmp_path):
    services = require_services()
    token = secrets.token_hex(3)
    s3 = local_s3["client"]
    buckets = {k: f"cgan-fleet-{k}-{token}" for k in ("art", "pub", "logs")}
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket)
    nodes = {"a": f"cgan-ascend-a-{token}", "b": f"cgan-ascend-b-{token}"}
    usage = tmp_path / "npu-usage.jsonl"
    private = {h: tmp_path / f"host-{h}" for h in HOSTS}
    envs = {h: host_env(private[h], nodes[h], HOSTS[h], usage) for h in HOSTS}
    toolkit = fake_toolkit_home(tmp_path)
    target = S3Target(endpoint=local_s3["endpoint"], access_key=local_s3["access_key"],
                      secret_key=local_s3["secret_key"], artifact_root=f"s3://{buckets['art']}/artifacts",
                      publish_bucket=buckets["pub"], log_folder=f"s3://{buckets['logs']}/logs")
    workers = [Worker("default", f"cgan-default-{token}"), Worker("ascend", nodes["a"], extra_env=envs["a"])]
    with CeleryStack(services, tmp_path / "stack", s3=target, toolkit=str(toolkit), workers=workers,
                     npu_count=3) as stack:
        stack._run_cli(["pools", "set", "ascend_npu", str(sum(map(len, HOSTS.values()))), "one slot per NPU"])
        stack.start_npu_host_worker(nodes["b"], **envs["b"])
        wait_for_dag(stack)
        stack.api.json("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        locks = {"a": npu_lock_dir(stack.deployment, "worker-ascend"),
                 "b": npu_lock_dir(stack.deployment, NPU_HOST_COMPONENT)}  # each host's folder, as compose mounts it
        killer = Killer(locks["a"])
        killer.start()
        run_id = stack.api.json("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", ok=(200,),
                                json={"logical_date": None, "conf": CONF})["dag_run_id"]
        state = wait_for_run(stack, run_id)
        killer.stop.set()
        tis = task_instances(stack, run_id)
        assert state == "success", f"run {run_id} {state}\n{report(stack, tis)}"
        npu_tis = {t["map_index"]: t for t in tis if t["task_id"] == "msame_infer"}
        assert sorted(npu_tis) == list(range(SHARDS)) and all(t["state"] == "success" for t in npu_tis.values())
        assert {t["hostname"] for t in npu_tis.values()} <= set(nodes.values()), ti_table(tis)

        # a SIGKILLed NPU task: it held a lease on host A; its retry ran; every lock is free now
        assert killer.killed is not None, "no NPU task was seen holding a lease on host A"
        assert max(t["try_number"] for t in npu_tis.values()) >= 2, ti_table(tis)
        time.sleep(3)
        for h in HOSTS:
            assert held_locks(locks[h]) == {}, h

        # every shard ran on a device of its own host (the worker that ran it)
        latest = json.loads(s3.get_object(Bucket=buckets["pub"], Key="latest.json")["Body"].read())
        manifest = json.loads(s3.get_object(Bucket=buckets["pub"], Key=latest["manifest"])["Body"].read())
        objects = {o["key"] for o in manifest["objects"]}
        host_of = {n: h for h, n in nodes.items()}
        for index, ti in npu_tis.items():
            key = next(k for k in objects if k.endswith(f"perf/shard_{index:04d}.perf.json"))
            device_label = json.loads(s3.get_object(Bucket=buckets["pub"], Key=key)["Body"].read())["device"]
            device, host = device_label.removeprefix("npu:").split("@")
            assert host == ti["hostname"] and int(device) in HOSTS[host_of[host]], (index, device_label)
        assert set(manifest["summary"]["devices"]) <= {f"npu:{d}@{nodes[h]}" for h in HOSTS for d in HOSTS[h]}

        # no device used twice at once (the stand-ins' own record of every use)
        uses = [json.loads(line) for line in usage.read_text().splitlines()]
        assert len(uses) >= SHARDS and {u["host"] for u in uses} == set(nodes.values()), uses
        for u in uses:
            assert u["device"] in HOSTS[host_of[u["host"]]], u
        for i, u in enumerate(uses):
            for v in uses[i + 1:]:
                if (u["host"], u["device"]) == (v["host"], v["device"]):
                    assert u["end"] <= v["start"] or v["end"] <= u["start"], (u, v)

        # byte-identical to a one-host run of the same seed (each PNG read out of its pack with `tar`)
        grids = {f"grid_{g:08d}.png": sha for g, sha in published_grids(
            s3, buckets["pub"], manifest, tmp_path / "read", grids=CONF["num_grids"]).items()}
        assert grids == one_host_grids(tmp_path / "one-host", CONF["seed"], CONF["num_grids"])
        print(f"fleet: killed {killer.killed}; uses per host "
              f"{ {n: sum(u['host'] == n for u in uses) for n in nodes.values()} }")
