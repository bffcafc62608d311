"""The cgan_generation DAG: parses cleanly, validates its form, and runs end to end for real
(Airflow 3.3 `airflow dags test` on SQLite, SeaweedFS as the object store)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from urllib.parse import quote

import pytest

from tests.airflow_stack import REPO, airflow_env, bucket_env, dags_test, s3_connection
from tests.faultproxy import FaultProxy
from tests.published_packs import (
    aws_cli,
    aws_s3_cp,
    check_v2_manifest,
    extract_with_tar,
    published_grids,
    webdataset_samples,
)

PARSE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("cgan_generation")
out = {"errors": {k: v[-400:] for k, v in bag.import_errors.items()}}
if dag is not None:
    from airflow.sdk.definitions.param import ParamsDict
    out["timetable"] = repr(dag.timetable)
    out["catchup"] = dag.catchup
    out["description"] = dag.description
    out["max_active_runs"] = dag.max_active_runs
    out["max_active_tasks"] = dag.max_active_tasks
    out["params"] = dag.params.dump()
    out["schema"] = {k: dict(dag.params.get_param(k).schema, description=dag.params.get_param(k).description)
                     for k in dag.params}
    out["tasks"] = {t.task_id: {"queue": t.queue, "pool": t.pool, "timeout": str(t.execution_timeout),
                                "retries": t.retries, "max_active_tis_per_dagrun": t.max_active_tis_per_dagrun,
                                "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
                                "expands": {k: getattr(getattr(v, "operator", None), "task_id", repr(v))
                                            for k, v in t.expand_input.value.items()} if t.is_mapped else None}
                    for t in dag.tasks}
    out["downstream"] = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    bad = []
    for conf in json.loads(sys.argv[2]):
        try:
            p = ParamsDict(dag.params)
            p.update(conf)
            p.validate()
            bad.append(None)
        except Exception as exc:
            bad.append(str(exc)[:300])
    out["validation"] = bad
print("RESULT" + json.dumps(out))
"""

STATES = r"""
import json
from airflow.models import DagRun, TaskInstance
from airflow.utils.session import create_session
with create_session() as session:
    run = (session.query(DagRun).filter(DagRun.dag_id == "cgan_generation")
           .order_by(DagRun.id.desc()).first())
    tis = session.query(TaskInstance).filter(TaskInstance.dag_id == "cgan_generation",
                                             TaskInstance.run_id == run.run_id).all()
    states = {}
    for ti in tis:
        states.setdefault(ti.task_id, []).append(getattr(ti.state, "value", ti.state))
print("STATES" + json.dumps(states))
"""


ASSET_EVENTS = r"""
import json, sys
from airflow.models.asset import AssetEvent, AssetModel
from airflow.utils.session import create_session
with create_session() as session:
    rows = (session.query(AssetEvent, AssetModel).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == sys.argv[1]).order_by(AssetEvent.id).all())
    print("EVENTS" + json.dumps([{"uri": a.uri, "extra": e.extra} for e, a in rows]))
"""


def asset_events(env: dict[str, str], uri: str) -> list[dict]:
    """The events of the Asset with this URI in the Airflow DB, oldest first (uri and extra)."""
    proc = subprocess.run([sys.executable, "-c", ASSET_EVENTS, uri], env=env, capture_output=True, text=True,
                          timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("EVENTS")]
    assert line, proc.stderr[-3000:]
    return json.loads(line[0][len("EVENTS"):])


def published_link(airflow_home, run_id: str) -> str | None:
    """The publish task's stored "Published run" link (XCom `_link_PublishedRunLink`) of a run."""
    db = sqlite3.connect(airflow_home / "airflow.db")
    try:
        rows = db.execute("select value from xcom where key = '_link_PublishedRunLink' and task_id = 'publish' "
                          "and run_id = ?", (run_id,)).fetchall()
    finally:
        db.close()
    return json.loads(rows[0][0]) if rows else None


def task_states(env: dict[str, str]) -> dict[str, list[str]]:
    """Each task's states (one per map index) in the newest cgan_generation run of the DB."""
    proc = subprocess.run([sys.executable, "-c", STATES], env=env, capture_output=True, text=True, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("STATES")]
    assert line, proc.stderr[-3000:]
    return json.loads(line[0][len("STATES"):])


BAD_CONFS = [
    {"num_grids": 0}, {"num_grids": 10_000_001}, {"num_grids": "ten"}, {"target": "gpu"},
    {"soc_version": "Ascend310; reboot"}, {"devices": []}, {"devices": [0, 0]}, {"devices": ["0"]},
    {"checkpoint": "models/x.pth && curl x"}, {"precision_mode": "fast"}, {"seed": -1},
    {"precision": "fp16"}, {"npu_tool": "trtexec"},
    {"num_grids": -5}, {"num_grids": 20_000_000}, {"grids_per_shard": 0}, {"grids_per_shard": 10_001},
    {"threads": 65},
]
GOOD_CONFS = [{"num_grids": 10_000_000, "grids_per_shard": 10_000}]  # the largest run and shard the form takes


def parse_dag(env: dict[str, str], confs: list[dict]) -> dict:
    """The DAG as the dag processor parses it under `env`, and each conf's validation error (or None)."""
    proc = subprocess.run([sys.executable, "-c", PARSE, str(REPO / "dags"), json.dumps(confs)],
                          env=env, capture_output=True, text=True, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    return json.loads(line[0][len("RESULT"):])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    return parse_dag(airflow_env(tmp_path_factory.mktemp("parse_home")), [{}] + BAD_CONFS + GOOD_CONFS)


def test_dag_folder_parses_without_errors(parsed):
    assert parsed["errors"] == {}
    assert "tasks" in parsed


def test_schedule_and_run_limits(parsed):
    """Nightly cron OR a checkpoint asset event (tests/dags/test_checkpoint_trigger.py runs it)."""
    assert "AssetOrTimeSchedule" in parsed["timetable"] and "cgan_checkpoint" in parsed["timetable"]
    # Airflow's header shows only "cgan_checkpoint" for this schedule: the description says it all
    assert parsed["description"].startswith("Runs nightly (cron '0 2 * * *', UTC) and when a checkpoint is registered")
    assert "CronTriggerTimetable" in parsed["timetable"] and "0 2 * * *" in parsed["timetable"]
    assert parsed["catchup"] is False and parsed["max_active_runs"] == 1


def test_defaults_validate_and_bad_input_is_refused(parsed):
    assert parsed["validation"][0] is None  # all defaults validate
    bad, good = parsed["validation"][1:len(BAD_CONFS) + 1], parsed["validation"][len(BAD_CONFS) + 1:]
    for conf, error in zip(BAD_CONFS, bad, strict=True):
        assert error is not None, f"{conf} was accepted"
    for conf, error in zip(GOOD_CONFS, good, strict=True):
        assert error is None, f"{conf} was refused: {error}"
    assert parsed["params"]["target"] == "cpu" and parsed["params"]["seed"] is None
    assert parsed["params"]["checkpoint"] == "models/cgan_generator.pth"
    assert parsed["params"]["keep_raw_outputs"] is False
    assert parsed["schema"]["keep_raw_outputs"]["section"] == "Advanced"
    assert parsed["params"]["precision"] == "fp32" and parsed["schema"]["precision"]["enum"] == ["fp32", "int8"]
    assert all(parsed["schema"][k].get("title") and parsed["schema"][k].get("description") for k in parsed["schema"])
    # Airflow 3.3's form shows no error at a number field (docs/dag.md): each help text gives the range
    numbers = [k for k, sc in parsed["schema"].items() if {"integer", "number"} & set(sc["type"] if
                                                                                     isinstance(sc["type"], list)
                                                                                     else [sc["type"]])]
    assert len(numbers) == 7, numbers
    for k in numbers:
        assert re.search(r"\b[\d,]+ to [\d,]+\b", parsed["schema"][k]["description"]), k


def test_no_number_field_gives_the_form_bounds_it_would_clamp_to(parsed):
    """Airflow 3.3's form hands schema minimum/maximum to its number input, which clamps a typed
    value on blur (0 -> 1, 20000000 -> 10000000) and runs that; the bounds are exclusive* instead,
    which the form's validation checks (the out-of-range values in BAD_CONFS are refused)."""
    for name, schema in parsed["schema"].items():
        assert "minimum" not in schema and "maximum" not in schema, name
    assert parsed["schema"]["num_grids"]["exclusiveMinimum"] == 0


def test_graph_branches_and_queues(parsed):
    tasks, down = parsed["tasks"], parsed["downstream"]
    assert "input_bins" in down["export_onnx"]  # a bad checkpoint fails before any bins are written
    assert down["choose_target"] == ["atc_convert", "onnxruntime_infer"]
    assert down["atc_convert"] == ["msame_infer"]
    assert down["msame_infer"] == down["onnxruntime_infer"] == ["postprocess"]
    assert down["postprocess"] == ["publish"]
    # a graph a person can read: each task's inputs reach it along the data flow (the plan read
    # through templates, not one XComArg edge per field): 26 edges before, 15 now
    assert sum(len(d) for d in down.values()) <= 15
    assert down["plan"] == ["export_onnx", "shards"]
    assert down["publish"] == ["cleanup", "quality_gate"] and tasks["cleanup"]["trigger_rule"] == "all_success"
    assert tasks["atc_convert"]["queue"] == tasks["msame_infer"]["queue"] == "ascend"
    assert tasks["msame_infer"]["pool"] == "ascend_npu"
    assert tasks["onnxruntime_infer"]["queue"] == "default" and tasks["export_onnx"]["queue"] == "default"
    assert tasks["postprocess"]["trigger_rule"] == "none_failed_min_one_success"
    assert all(t["timeout"] != "None" for t in tasks.values())


def test_cpu_inference_tasks_never_outnumber_the_cores(parsed):
    assert parsed["tasks"]["onnxruntime_infer"]["max_active_tis_per_dagrun"] == os.cpu_count()
    assert parsed["params"]["threads"] == 1  # 1 thread per task x cores tasks = the cores


def test_input_bins_and_inference_are_mapped_over_the_shards(parsed):
    """input_bins writes one shard's bins per task (no task's time grows with the run), like the
    inference tasks; plan, export and the run-wide tasks are not mapped."""
    tasks = parsed["tasks"]
    for task_id in ("input_bins", "onnxruntime_infer", "msame_infer"):
        assert tasks[task_id]["expands"] == {"shard": "shards"}, (task_id, tasks[task_id])
    for task_id in ("plan", "export_onnx", "choose_target", "atc_convert", "postprocess", "publish", "cleanup"):
        assert tasks[task_id]["expands"] is None, task_id
    assert "input_bins" in parsed["downstream"]["shards"]


def test_max_active_tasks_follows_the_inference_slots(parsed, tmp_path):
    """Airflow's default of 16 task instances a run would starve a fleet of 64 NPUs (or a worker
    of 100 cpu inference tasks): the DAG's max_active_tasks leaves every inference slot busy
    (CGAN_NPU_SLOTS, CGAN_CPU_INFER_TASKS), and the run's other tasks room beside them."""
    assert parsed["max_active_tasks"] >= max(16, os.cpu_count() or 1)
    npus = parse_dag(airflow_env(tmp_path / "npu", CGAN_NPU_SLOTS="64", CGAN_CPU_INFER_TASKS="2"), [])
    assert npus["errors"] == {} and npus["max_active_tasks"] > 64
    cpus = parse_dag(airflow_env(tmp_path / "cpu", CGAN_NPU_SLOTS="1", CGAN_CPU_INFER_TASKS="100"), [])
    assert cpus["max_active_tasks"] > 100
    assert cpus["tasks"]["onnxruntime_infer"]["max_active_tis_per_dagrun"] == 100
    small = parse_dag(airflow_env(tmp_path / "small", CGAN_NPU_SLOTS="1", CGAN_CPU_INFER_TASKS="1"), [])
    assert small["max_active_tasks"] == 16  # never fewer than Airflow's default


def test_dag_file_does_not_import_torch_at_parse_time(tmp_path):
    code = ("import sys, runpy; runpy.run_path(sys.argv[1]); "
            "print('HEAVY=' + ','.join(m for m in ('torch', 'onnx', 'onnxruntime', 'onnxsim') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(REPO / "dags" / "cgan_generation.py")],
                          env=airflow_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert "HEAVY=\n" in proc.stdout + "\n", proc.stdout[-500:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_cpu_run_publishes_a_complete_run(airflow_home, local_s3, tmp_path):
    client = local_s3["client"]
    # the store's clock runs 2 days ahead (a proxy moves its Date header): the orphan below is
    # older than the 1-day retention to cleanup, which ages objects by the store's clock
    with FaultProxy(local_s3["endpoint"], date_offset_s=2 * 86400) as proxy:
        env = bucket_env(airflow_home, local_s3, tmp_path, "dagtest", CGAN_WORKSPACE_RETENTION_DAYS="1",
                         AIRFLOW_CONN_CGAN_S3=s3_connection(proxy.endpoint, local_s3["access_key"],
                                                            local_s3["secret_key"]))
        orphan = "runs/failed-earlier/attempts/20260101T000000.000000Z-abcdef/packs/pack_00000000.tar"
        client.put_object(Bucket="dagtest", Key=orphan, Body=b"staged by a run that never published")
        foreign = "runs/failed-earlier/notes.txt"  # not written by cgan: the sweep leaves it
        client.put_object(Bucket="dagtest", Key=foreign, Body=b"another team's file")
        proc = dags_test(env, {"num_grids": 5, "grids_per_shard": 2, "seed": 3, "target": "cpu"})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    # logs for people: the plan in a few lines (not Airflow's dump of its dict), every gate check
    assert "plan: 5 grid(s), seed 3 (as given)" in log and "plan: 3 shard(s) of 1 to 2 grids (as set)" in log
    assert "'shards': [" not in log
    assert "quality gate: passed: label_accuracy = " in log
    # publish: one count of what it published, then where the run is (the DAG run's Gallery tab)
    assert "5 grid(s) in 3 pack(s) (each with its index) and" in log
    assert "The run in the gallery: /dags/cgan_generation/runs/manual__" in log and "/plugin/cgan-gallery-run" in log
    latest = json.loads(client.get_object(Bucket="dagtest", Key="latest.json")["Body"].read())
    manifest = json.loads(client.get_object(Bucket="dagtest", Key=latest["manifest"])["Body"].read())
    # layout v2: the 5 grids in packs (one per shard of 2, 2, 1), each read with `tar` and checked
    # against the manifest and its index
    packs = check_v2_manifest(manifest, 5)
    assert [(p["first"], p["count"]) for p in packs] == [(0, 2), (2, 2), (4, 1)]
    assert sorted(published_grids(client, "dagtest", manifest, tmp_path / "read")) == [0, 1, 2, 3, 4]
    pack_keys = [k for p in packs for k in (p["key"], p["index"]["key"])]
    # staged by the inference tasks under attempts of their own (one per shard), not uploaded by publish
    run_prefix = latest["manifest"].rsplit("/", 1)[0]
    assert all(k.startswith(f"{run_prefix}/attempts/") and not k.startswith(manifest["root"] + "/")
               for k in pack_keys), pack_keys
    assert len({k.split("/attempts/")[1].split("/")[0] for k in pack_keys}) == 3
    keys = [o["key"] for o in manifest["objects"]]  # the reports, under the publish attempt
    assert any(k.endswith("/quality/quality.json") for k in keys) and any(k.endswith("/perf/latency.png") for k in keys)
    assert all(k.startswith(manifest["root"] + "/") for k in keys) and not [k for k in keys if "/packs/" in k]
    for obj in manifest["objects"]:
        body = client.get_object(Bucket="dagtest", Key=obj["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == obj["sha256"]
    # the webdataset library reads a pack as it is: one sample a grid, in grid order
    samples = webdataset_samples(next((tmp_path / "read" / "packs").glob("pack_00000002.tar")))
    assert list(samples) == ["grid_00000002", "grid_00000003"]
    assert all(png.startswith(b"\x89PNG") for png in samples.values())
    cli = aws_cli()  # and the AWS CLI downloads one from the bucket, the bytes the manifest names
    assert cli is not None or not os.environ.get("CGAN_REQUIRE_SERVICES"), "no AWS CLI (.ci/run installs it)"
    if cli is not None:
        got = aws_s3_cp(local_s3, "dagtest", packs[2]["key"], tmp_path / "aws" / "pack.tar")
        assert got.returncode == 0, got.stderr[-2000:]
        body = (tmp_path / "aws" / "pack.tar").read_bytes()
        assert len(body) == packs[2]["size"] and hashlib.sha256(body).hexdigest() == packs[2]["sha256"]
        index = json.loads(client.get_object(Bucket="dagtest", Key=packs[2]["index"]["key"])["Body"].read())
        assert extract_with_tar(tmp_path / "aws" / "pack.tar", tmp_path / "aws" / "x", index).keys() == {
            "grid_00000004.png"}
    assert manifest["params"]["seed"] == 3 and manifest["params"]["target"] == "cpu"
    assert manifest["model"]["onnx_sha256"] and manifest["tools"]["apache-airflow"].startswith("3.3")
    assert manifest["summary"]["grids"] == 5
    # the log a person reads: progress, closing summary, where it went; never the secret
    assert "grids 5/5" in log and "Published" in log and "label accuracy" in log
    assert local_s3["secret_key"] not in log
    # the branch not taken shows as skipped (its tasks' states in the run), the one taken succeeded
    states = task_states(env)
    assert states["atc_convert"] == ["skipped"] and set(states["msame_infer"]) == {"skipped"}, states
    assert set(states["onnxruntime_infer"]) == {"success"} and states["publish"] == ["success"], states
    # the "Published run" extra link as the task runner stored it (what the UI's Details tab shows,
    # tests/plugins/test_gallery_browser.py): the run's Gallery tab
    link = published_link(airflow_home, manifest["run_id"])
    assert link == f"/dags/cgan_generation/runs/{quote(manifest['run_id'], safe='')}/plugin/cgan-gallery-run"
    # published, so its workspace is gone; the exported model stays in the model store, once
    root = tmp_path / "artifacts"
    assert not [p for p in (root / "runs").rglob("*") if p.is_file()]
    assert [p.name for p in (root / "models").glob("*/*")] == ["cgan.onnx", "entry.json"] or sorted(
        p.name for p in (root / "models").glob("*/*")) == ["cgan.onnx", "entry.json"]
    assert "Removed the published run's workspace" in log
    assert "removed s3://dagtest/runs/failed-earlier/: no manifest" in log  # an unpublished run's staged packs
    assert [o["Key"] for o in client.list_objects_v2(Bucket="dagtest", Prefix="runs/failed-earlier/")["Contents"]] == [
        foreign]
    events = asset_events(env, "s3://dagtest/runs")  # the publish task's Asset event, for other DAGs
    assert len(events) == 1 and events[0]["extra"]["manifest"] == latest["manifest"], events
    assert events[0]["extra"]["grids"] == 5 and events[0]["extra"]["gate"] == "accepted"
    assert events[0]["extra"]["label_accuracy"] > 0.9 and events[0]["extra"]["grids_per_s"] > 0


@pytest.mark.slow
def test_a_failed_runs_workspace_is_kept_then_removed_after_the_retention(airflow_home, local_s3, tmp_path):
    """A run that fails at publish keeps its workspace for inspection; a later run, once
    published, removes its own workspace and every one older than the retention."""
    import time

    client = local_s3["client"]
    root = tmp_path / "artifacts"
    env = bucket_env(airflow_home, local_s3, tmp_path, "lifecycle", CGAN_RETRY_DELAY_S="0")
    conf = {"num_grids": 2, "seed": 1, "target": "cpu"}
    failed = dags_test(dict(env, CGAN_PUBLISH_BUCKET="no-such-bucket"), conf)  # fails at once (staging)
    assert failed.returncode != 0 and "no-such-bucket" in failed.stdout + failed.stderr
    (kept,) = [p for p in (root / "runs").iterdir()]
    assert list(kept.rglob("inputs.pack"))  # left for inspection
    young = dags_test(env, conf)  # within the retention: the failed run's workspace stays
    assert young.returncode == 0, (young.stdout + young.stderr)[-4000:]
    assert [p.name for p in (root / "runs").iterdir() if any(p.rglob("inputs.pack"))] == [kept.name]
    then = time.time() - 8 * 86400
    for path in kept.rglob("*"):
        os.utime(path, (then, then))
    published = dags_test(env, conf)
    log = published.stdout + published.stderr
    assert published.returncode == 0, log[-4000:]
    assert not [p for p in (root / "runs").rglob("*") if p.is_file()]
    assert f"Removed workspace runs/{kept.name}, untouched for 8.0 days" in log
    assert sorted(p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_file()) == ["models", "models"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="lifecycle")["Contents"]]
    assert sum(k.endswith("manifest.json") for k in keys) == 2  # the published runs are untouched


@pytest.mark.slow
def test_cpu_run_at_int8_publishes_its_precision(airflow_home, local_s3, tmp_path):
    client = local_s3["client"]
    env = bucket_env(airflow_home, local_s3, tmp_path, "dagint8", CGAN_INT8_CACHE=str(tmp_path / "int8"))
    proc = dags_test(env, {"num_grids": 2, "seed": 3, "target": "cpu", "precision": "int8"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    latest = json.loads(client.get_object(Bucket="dagint8", Key="latest.json")["Body"].read())
    manifest = json.loads(client.get_object(Bucket="dagint8", Key=latest["manifest"])["Body"].read())
    assert manifest["params"]["precision"] == "int8"
    key = next(o["key"] for o in manifest["objects"] if o["key"].endswith("/quality/quality.json"))
    quality = json.loads(client.get_object(Bucket="dagint8", Key=key)["Body"].read())
    assert quality["precision"] == "int8" and quality["parity_ok"] is True
    assert 1e-3 < quality["parity_max_abs_err"] <= quality["parity_limits"]["max_abs"]
    assert len(list((tmp_path / "int8").glob("cgan-int8-*.onnx"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("conf,field", [({"num_grids": -1}, "num_grids"), ({"target": "gpu"}, "target")])
def test_invalid_trigger_fails_before_any_task_runs(airflow_home, tmp_path, conf, field):
    env = airflow_env(airflow_home, CGAN_ARTIFACT_ROOT=(tmp_path / "artifacts").as_uri())
    proc = dags_test(env, conf)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert field in log and "ParamValidationError" in log
    assert "Task started" not in log  # refused before any task instance ran
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.slow
def test_ascend_run_with_standins_converts_once_and_publishes(airflow_home, local_s3, tmp_path):
    """target=ascend through the real DAG, with the contract-faithful atc/msame stand-ins of
    tests/standins (no NPU exists here). Two runs of 2 shards, each shard leasing an NPU among the
    run's `devices`: msame first, then ais_bench (the stand-in API) with the cached om; the same grids."""
    from tests.standins.fixtures import STANDINS, TOOLKIT_VERSION, fake_toolkit_home

    home = fake_toolkit_home(tmp_path)
    client = local_s3["client"]
    client.create_bucket(Bucket="ascendtest")
    env = airflow_env(
        airflow_home, CGAN_ARTIFACT_ROOT=(tmp_path / "artifacts").as_uri(), CGAN_PUBLISH_BUCKET="ascendtest",
        CGAN_ASCEND_TOOLKIT=str(home), CGAN_MSAME=str(STANDINS / "msame"),
        STANDIN_ATC_CALLS=str(tmp_path / "atc.jsonl"), STANDIN_MSAME_CALLS=str(tmp_path / "msame.jsonl"),
        AIRFLOW_CONN_CGAN_S3=s3_connection(local_s3["endpoint"], local_s3["access_key"], local_s3["secret_key"]),
        CGAN_NPU_DEVICES="0,1,2", CGAN_NPU_LOCK_DIR=str(tmp_path / "npu-locks"), STANDIN_MSAME_DEVICES="0,1,2",
        STANDIN_NPU_STATE_DIR=str(tmp_path / "npu-state"),  # the stand-ins refuse a device used twice at once
        PYTHONPATH=f"{STANDINS / 'ais_bench_api'}:{REPO}",  # the stand-in ais_bench API (second run)
    )
    conf = {"num_grids": 3, "seed": 5, "target": "ascend", "devices": [0, 1], "soc_version": "Ascend310P3",
            "grids_per_shard": 2}  # 2 shards, each leasing an NPU among 0,1 when it runs
    for tool in ("msame", "ais_bench"):
        proc = dags_test(env, dict(conf, npu_tool=tool))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    atc_calls = (tmp_path / "atc.jsonl").read_text().splitlines()
    msame_calls = [json.loads(line) for line in (tmp_path / "msame.jsonl").read_text().splitlines()]
    assert len(atc_calls) == 1  # the second run hit the conversion cache
    assert {c["argv"][c["argv"].index("--device") + 1] for c in msame_calls} <= {"0", "1"}  # the restriction
    assert len(msame_calls) == 2  # one per shard of the msame run; the second run used ais_bench
    latest = json.loads(client.get_object(Bucket="ascendtest", Key="latest.json")["Body"].read())
    manifest = json.loads(client.get_object(Bucket="ascendtest", Key=latest["manifest"])["Body"].read())
    assert manifest["model"]["cache_hit"] is True and manifest["model"]["om_sha256"]
    assert manifest["tools"]["cann_toolkit"].startswith(TOOLKIT_VERSION)
    host = manifest["summary"]["devices"][0].split("@")[1]
    assert set(manifest["summary"]["devices"]) <= {f"npu:0@{host}", f"npu:1@{host}"}
    keys = [o["key"] for o in manifest["objects"]]
    assert [(p["first"], p["count"]) for p in check_v2_manifest(manifest, 3)] == [(0, 2), (2, 1)]  # 1 pack a shard
    perf_key = next(k for k in keys if k.endswith("perf/perf.json"))
    perf = json.loads(client.get_object(Bucket="ascendtest", Key=perf_key)["Body"].read())
    assert perf["backend"] == "ais_bench" and perf["shards"] == 2
    manifests = [o["Key"] for o in client.list_objects_v2(Bucket="ascendtest")["Contents"]
                 if o["Key"].endswith("/manifest.json")]
    first = json.loads(client.get_object(Bucket="ascendtest", Key=next(m for m in manifests
                                                                        if m != latest["manifest"]))["Body"].read())
    assert any(o["key"].endswith("shard_0001.msame.log") for o in first["objects"])

    # msame and ais_bench: the same grids, byte for byte (each PNG read out of its pack with `tar`)
    msame_grids = published_grids(client, "ascendtest", first, tmp_path / "msame", grids=3)
    assert sorted(msame_grids) == [0, 1, 2]
    assert msame_grids == published_grids(client, "ascendtest", manifest, tmp_path / "ais_bench", grids=3)
    states = task_states(env)  # the cpu branch exists and was skipped; the ascend one ran
    assert set(states["onnxruntime_infer"]) == {"skipped"}, states
    assert states["atc_convert"] == ["success"] and states["msame_infer"] == ["success", "success"], states
    root = tmp_path / "artifacts"  # the om and the ONNX once each, by content; no workspace left
    assert sorted(p.relative_to(root).as_posix().split("/")[0] for p in root.rglob("*") if p.is_file()) == [
        "atc-cache", "atc-cache", "models", "models"]


def test_a_collapsed_generator_is_published_rejected_and_the_run_fails_at_the_gate(
        airflow_home, local_s3, tmp_path, committed_generator):
    """A generator that draws one style per digit (every digit readable) through the real DAG; the
    failure alert reaches a real local webhook receiver."""
    from tests.alert_receiver import webhook_receiver
    from tests.cgan.quality.gate_models import broken_checkpoint

    checkpoint = broken_checkpoint(committed_generator, tmp_path / "collapsed.pth", "collapsed")
    client = local_s3["client"]
    env = bucket_env(airflow_home, local_s3, tmp_path, "gatetest", CGAN_CHECKPOINT_ROOTS=f"models,{tmp_path}")
    with webhook_receiver() as (hook, alerts):
        env["CGAN_ALERT_WEBHOOK_URL"] = hook
        proc = dags_test(env, {"num_grids": 3, "seed": 4, "target": "cpu", "checkpoint": str(checkpoint)})
    log = proc.stdout + proc.stderr
    assert [a["task_id"] for a in alerts] == ["quality_gate"], alerts
    assert "feature_diversity (worst digit) = 0.0 (needs >= 0.5)" in alerts[0]["reason"]
    assert alerts[0]["run_id"].startswith("manual__") and "quality_gate" in alerts[0]["log_url"]
    assert local_s3["secret_key"] not in str(alerts)
    assert "quality gate: the run is rejected: feature_diversity (worst digit) = 0.0 (needs >= 0.5)" in log, log[-6000:]
    states = task_states(env)
    assert states["publish"] == ["success"] and states["quality_gate"] == ["failed"], states
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="gatetest").get("Contents", [])]
    assert "latest.json" not in keys  # rejected: published for inspection only
    manifest_key = next(k for k in keys if k.endswith("/manifest.json"))
    manifest = json.loads(client.get_object(Bucket="gatetest", Key=manifest_key)["Body"].read())
    assert manifest["status"] == "rejected" and manifest["summary"]["feature_diversity"] == 0.0


def test_fp16_npu_outputs_are_judged_by_the_precision_mode(airflow_home, local_s3, tmp_path):
    """The msame stand-in returns fp16-rounded outputs: accepted under force_fp16, rejected on parity
    when the run claims must_keep_origin_dtype (fp32)."""
    from tests.standins.fixtures import STANDINS, fake_toolkit_home

    home = fake_toolkit_home(tmp_path)
    client = local_s3["client"]
    client.create_bucket(Bucket="fp16test")
    env = airflow_env(
        airflow_home, CGAN_ARTIFACT_ROOT=(tmp_path / "artifacts").as_uri(), CGAN_PUBLISH_BUCKET="fp16test",
        CGAN_ASCEND_TOOLKIT=str(home), CGAN_MSAME=str(STANDINS / "msame"), STANDIN_MSAME_FP16="1",
        CGAN_NPU_DEVICES="0", CGAN_NPU_LOCK_DIR=str(tmp_path / "npu-locks"), STANDIN_MSAME_DEVICES="0",
        AIRFLOW_CONN_CGAN_S3=s3_connection(local_s3["endpoint"], local_s3["access_key"], local_s3["secret_key"]),
    )
    conf = {"num_grids": 2, "seed": 5, "target": "ascend", "devices": [0],
            "precision_mode": "must_keep_origin_dtype"}
    proc = dags_test(env, conf)
    log = proc.stdout + proc.stderr
    assert "parity_max_abs_err (ascend, must_keep_origin_dtype) = 0.000" in log, log[-6000:]
    assert task_states(env)["quality_gate"] == ["failed"]
    proc = dags_test(env, dict(conf, precision_mode="force_fp16"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    latest = json.loads(client.get_object(Bucket="fp16test", Key="latest.json")["Body"].read())
    manifest = json.loads(client.get_object(Bucket="fp16test", Key=latest["manifest"])["Body"].read())
    assert manifest["status"] == "accepted" and 1e-4 < manifest["summary"]["parity_max_abs_err"] <= 0.05
