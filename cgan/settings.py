"""Deployment settings, read from the environment (docker-compose `.env`, `make up`, CI).

| variable | default | meaning |
|---|---|---|
| CGAN_ARTIFACT_ROOT | file://<project>/var/artifacts | store URI under which each run gets a workspace |
| CGAN_PUBLISH_BUCKET | cgan | bucket that published runs go to |
| CGAN_S3_CONN_ID | cgan_s3 | Airflow connection of the object store |
| CGAN_DEFAULT_TARGET | cpu | target of nightly runs: cpu or ascend |
| CGAN_SOC_VERSION | Ascend310P3 | default --soc_version of atc |
| CGAN_DEVICES | (none: any NPU) | the form's default devices (ACL ids), comma-separated |
| CGAN_SCHEDULE | 0 2 * * * | cron of the nightly run |
| CGAN_TIMEZONE | UTC | timezone of that cron |
| CGAN_NUM_GRIDS | 100 | default grids per run |
| CGAN_PUBLISHED_URL | /dags/{dag_id}/runs/{run_id}/plugin/cgan-gallery-run | "Published run" link (Gallery tab) |
| CGAN_ASCEND_TOOLKIT | (none: found) | CANN toolkit home (set_env.sh's folder); unset: found on the worker |
| CGAN_ATC_FROM_PATH | false | use the atc found on PATH instead of the toolkit's set_env.sh |
| CGAN_MSAME | msame | msame's path, or a name looked up on the Ascend worker's PATH |
| CGAN_RETRY_DELAY_S | 30 | first retry delay of the DAG's tasks (then exponential backoff) |
| CGAN_WORKSPACE_RETENTION_DAYS | 7 | days a failed run's workspace is kept before a later run removes it |
| CGAN_PUBLISHED_RETENTION_DAYS | (none: kept) | days a published run is kept (never the one latest.json names) |
| CGAN_CPU_PRECISION | fp32 | default precision of the cpu target: fp32 or int8 (form, `cgan`) |
| CGAN_INT8_CACHE | ~/.cache/cgan/int8 | folder of the int8 models built from the ONNX (cpu, int8) |
| CGAN_CHECKPOINT_ROOTS | models | folders and s3://bucket[/prefix] a run's checkpoint may come from |
| CGAN_ALERT_WEBHOOK_URL, CGAN_ALERT_EMAIL_TO | (none) | where failure and late-run alerts go |
| CGAN_ALERT_SMTP_HOST, CGAN_ALERT_SMTP_PORT, CGAN_ALERT_EMAIL_FROM | localhost, 25, cgan-airflow@... | e-mail |
| CGAN_LATE_AFTER_MINUTES | (none: off) | a run not finished this long after queued is late (compose: 240) |
| CGAN_AIRFLOW_API_URL, CGAN_AIRFLOW_USER, CGAN_AIRFLOW_PASSWORD | http://127.0.0.1:8080 | Airflow's REST API |
| CGAN_GATE_MIN_LABEL_ACCURACY | 0.90 | quality gate: least label accuracy (cgan.quality.gate) |
| CGAN_GATE_MIN_CLASS_ACCURACY | 0.75 | quality gate: least accuracy of the worst digit |
| CGAN_GATE_MIN_DIVERSITY | 0.5 | quality gate: least feature diversity of the worst digit |
| CGAN_NPU_TOOL | msame | the form's default NPU tool: msame or ais_bench |
| CGAN_CPU_INFER_TASKS | the cores | cpu inference tasks one run runs at once (sizes automatic shards) |
| CGAN_NPU_SLOTS | 1 | NPUs of all Ascend hosts together: the ascend_npu pool (compose) and automatic ascend shards |
| CGAN_ORT_SPLIT_DECONV | auto | ORT loads phase-split ConvTransposes: auto (x86-64), on, off |
| CGAN_S3_ENDPOINT_URL | (boto3's) | S3 endpoint where no Airflow connection gives the client (`cgan`, s3:// stores) |

Read on each Ascend worker, about the host it runs on (cgan.ascend.inventory, cgan.ascend.lease,
cgan.ascend.msame, cgan.ascend.toolkit):

| variable | default | meaning |
|---|---|---|
| CGAN_NPU_DEVICES | (all) | ACL ids this worker may use (alone: its inventory), comma-separated |
| CGAN_NPU_DEV_DIR | /dev | where the `davinci<N>` device nodes are looked for |
| CGAN_NPU_PRECHECK | 1 | 0: msame's device is not checked against the inventory before msame runs (`cgan infer`) |
| CGAN_NPU_HOST | the hostname | the name this host's NPUs are reported under (`npu:<id>@<host>`) |
| CGAN_NPU_LOCK_DIR | <tmp>/cgan-npu-locks | folder of the NPU lease locks, shared by every process on the host |
| CGAN_NPU_LEASE_WAIT_S | 600 | seconds a task waits for a free NPU |
| CGAN_ASCEND_PYTHON | (none) | CANN's own Python interpreter for atc and msame (the Ascend image sets it) |

CGAN_ARTIFACT_ROOT and CGAN_PUBLISH_BUCKET are checked when read: a bucket or prefix that is
not a valid S3 name is refused with the variable's name, before any work (the bucket when the
DAG is parsed, the artifact root by the run's first task).
"""

from __future__ import annotations

import os

from cgan.checks import env_number
from cgan.errors import CganError
from cgan.paths import PROJECT_ROOT


class ConfigError(CganError, ValueError):
    """A deployment setting (environment variable) has a value that cannot work."""

    retryable = False


def artifact_root() -> str:
    from cgan.storage.keys import StoreError
    from cgan.storage.store import check_store_uri

    uri = os.environ.get("CGAN_ARTIFACT_ROOT") or (PROJECT_ROOT / "var" / "artifacts").as_uri()
    try:
        if "@" in uri.split("://", 1)[-1].split("/", 1)[0]:
            raise StoreError("credentials do not belong in the URI: give them to the Airflow connection "
                             "(CGAN_S3_CONN_ID) or the environment")
        return check_store_uri(uri)
    except StoreError as exc:
        raise ConfigError(_redact(f"CGAN_ARTIFACT_ROOT={uri!r} cannot be used: {exc}", uri)) from None


def _redact(text: str, uri: str) -> str:
    """text without the user:password part of uri, if it has one."""
    netloc = uri.split("://", 1)[-1].split("/", 1)[0]
    return text.replace(netloc.rsplit("@", 1)[0], "***") if "@" in netloc else text


def s3_endpoint_url() -> str | None:
    """The S3 endpoint where no Airflow connection gives the client (CGAN_S3_ENDPOINT_URL; None: boto3's)."""
    return os.environ.get("CGAN_S3_ENDPOINT_URL") or None


def publish_bucket() -> str:
    from cgan.storage.keys import StoreError, check_bucket

    bucket = os.environ.get("CGAN_PUBLISH_BUCKET") or "cgan"
    try:
        return check_bucket(bucket)
    except StoreError as exc:
        raise ConfigError(f"CGAN_PUBLISH_BUCKET: {exc}") from None


def s3_conn_id() -> str:
    return os.environ.get("CGAN_S3_CONN_ID") or "cgan_s3"


def default_target() -> str:
    return os.environ.get("CGAN_DEFAULT_TARGET") or "cpu"


def soc_version() -> str:
    return os.environ.get("CGAN_SOC_VERSION") or "Ascend310P3"


def devices() -> list[int] | None:
    """The `devices` form field's default: None (any NPU of each Ascend worker) unless CGAN_DEVICES."""
    raw = os.environ.get("CGAN_DEVICES") or ""
    if not raw.strip():
        return None
    try:
        return [int(d) for d in raw.split(",") if d.strip()]
    except ValueError:
        raise ConfigError(f"CGAN_DEVICES={raw!r} must be comma-separated device ids "
                          "(ACL ids: each worker's NPUs from 0) such as 0,1; fix it, or leave it "
                          "empty for any NPU of each Ascend worker") from None


def schedule() -> str:
    return os.environ.get("CGAN_SCHEDULE") or "0 2 * * *"


def timezone() -> str:
    return os.environ.get("CGAN_TIMEZONE") or "UTC"


def num_grids() -> int:
    return int(os.environ.get("CGAN_NUM_GRIDS") or 100)


def published_url_template() -> str:
    """The "Published run" link: the DAG run's Gallery tab inside the Airflow UI by default (the
    bucket is private, so a direct object URL answers 403). Placeholders: {dag_id}, {run_id}
    (URL-encoded), {name} (the run's gallery name), {endpoint}, {bucket}, {prefix}."""
    return os.environ.get("CGAN_PUBLISHED_URL") or "/dags/{dag_id}/runs/{run_id}/plugin/cgan-gallery-run"


def ascend_toolkit() -> str | None:
    """CGAN_ASCEND_TOOLKIT, or None: the Ascend worker finds the toolkit itself
    (cgan.ascend.toolkit.find_toolkit_home), in whichever CANN layout its host has."""
    return (os.environ.get("CGAN_ASCEND_TOOLKIT") or "").strip() or None


def atc_from_path() -> bool:
    return (os.environ.get("CGAN_ATC_FROM_PATH") or "false").strip().lower() in ("1", "true", "yes")


def msame() -> str:
    return os.environ.get("CGAN_MSAME") or "msame"


def npu_tool() -> str:
    """The `npu_tool` form field's default (CGAN_NPU_TOOL): msame or ais_bench."""
    return os.environ.get("CGAN_NPU_TOOL") or "msame"


def retry_delay_s() -> float:
    """First retry delay of the DAG's tasks in seconds (tests lower it; production keeps 30)."""
    return env_number("CGAN_RETRY_DELAY_S", 30, 0, 3600, "seconds", float, error=ConfigError)


def ort_split_deconv() -> bool:
    """Whether ONNX Runtime loads the generator with phase-split ConvTransposes
    (cgan.runtimes.ort_graph). CGAN_ORT_SPLIT_DECONV: auto (default: on x86-64, where ONNX
    Runtime's blocked convolutions make it faster), on, or off."""
    from cgan.runtimes.ort_graph import split_pays_off

    raw = (os.environ.get("CGAN_ORT_SPLIT_DECONV") or "auto").strip().lower()
    if raw in ("on", "true", "1", "yes"):
        return True
    if raw in ("off", "false", "0", "no"):
        return False
    if raw == "auto":
        return split_pays_off()
    raise ConfigError(f"CGAN_ORT_SPLIT_DECONV={raw!r} must be auto, on or off")


def workspace_retention_days() -> float:
    """Days a run workspace left behind (a failed run's) is kept before a later run removes it."""
    return env_number("CGAN_WORKSPACE_RETENTION_DAYS", 7, 1, 3650, "days", float, error=ConfigError)


def published_retention_days() -> float | None:
    """Days a published run is kept before a later run's cleanup removes it
    (`CGAN_PUBLISHED_RETENTION_DAYS`; empty: published runs are kept). Never the run latest.json names."""
    if not os.environ.get("CGAN_PUBLISHED_RETENTION_DAYS", "").strip():
        return None
    return env_number("CGAN_PUBLISHED_RETENTION_DAYS", 0, 1, 36500, "days", float, error=ConfigError)


def cpu_precision() -> str:
    """Default precision of the cpu target (CGAN_CPU_PRECISION): fp32 or int8."""
    from cgan.runtimes.ort_int8 import PRECISIONS

    raw = (os.environ.get("CGAN_CPU_PRECISION") or "fp32").strip().lower()
    if raw not in PRECISIONS:
        raise ConfigError(f"CGAN_CPU_PRECISION={raw!r} must be one of {', '.join(PRECISIONS)}")
    return raw


def cpu_infer_tasks() -> int:
    """Inference tasks of the `cpu` target one run may run at once (`CGAN_CPU_INFER_TASKS`).

    Default: the cores of this machine, so at 1 ONNX Runtime thread per task (the form's default)
    the tasks never oversubscribe a LocalExecutor host. With Celery, set it to the sum over the
    default-queue workers of cores // threads, and each worker's concurrency to cores // threads."""
    return env_number("CGAN_CPU_INFER_TASKS", os.cpu_count() or 1, 1, 4096, "tasks", int, error=ConfigError)


def npu_slots() -> int:
    """NPUs of all Ascend hosts together (`CGAN_NPU_SLOTS`): the size docker compose gives the
    ascend_npu pool, and the slots an automatic ascend plan balances its shards over."""
    return env_number("CGAN_NPU_SLOTS", 1, 1, 4096, "NPUs", int, error=ConfigError)


def max_active_tasks() -> int:
    """Task instances one run may run at once: every inference slot of either target plus the
    run's other tasks, and never fewer than Airflow's default of 16."""
    return max(16, npu_slots() + 4, cpu_infer_tasks() + 4)


def gate_thresholds():
    """The quality gate's default thresholds (cgan.quality.gate.Thresholds), CGAN_GATE_* overriding."""
    from cgan.quality.gate import Thresholds, check_threshold

    values = {}
    for name in ("min_label_accuracy", "min_class_accuracy", "min_diversity"):
        var = f"CGAN_GATE_{name.upper()}"
        raw = os.environ.get(var)
        if raw:
            try:
                values[name] = check_threshold(var, float(raw))
            except ValueError:
                raise ConfigError(f"{var}={raw!r} must be a number in 0..1") from None
    return Thresholds(**values)


def checkpoint_roots() -> list[str]:
    """Where a run's checkpoint may come from (CGAN_CHECKPOINT_ROOTS; default: the models folder)."""
    from cgan.storage.keys import StoreError, check_bucket

    raw = os.environ.get("CGAN_CHECKPOINT_ROOTS") or "models"
    roots = [r.strip() for r in raw.split(",") if r.strip()]
    for root in roots:
        if root.startswith("s3://"):
            try:
                check_bucket(root[5:].split("/", 1)[0])
            except StoreError as exc:
                raise ConfigError(f"CGAN_CHECKPOINT_ROOTS: {root!r}: {exc}") from None
        elif ".." in root.split("/"):
            raise ConfigError(f"CGAN_CHECKPOINT_ROOTS: {root!r} must not contain '..'")
    return roots


def alert_targets() -> dict:
    """Where failure alerts go (cgan.integrations.alerts): webhook URL and/or e-mail; empty: no alerts."""
    to = [a.strip() for a in (os.environ.get("CGAN_ALERT_EMAIL_TO") or "").split(",") if a.strip()]
    raw_port = os.environ.get("CGAN_ALERT_SMTP_PORT") or "25"
    if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        raise ConfigError(f"CGAN_ALERT_SMTP_PORT={raw_port!r} must be a TCP port number (1..65535)")
    port = int(raw_port)
    return {"webhook": os.environ.get("CGAN_ALERT_WEBHOOK_URL") or None, "email_to": to,
            "smtp_host": os.environ.get("CGAN_ALERT_SMTP_HOST") or "localhost", "smtp_port": port,
            "email_from": os.environ.get("CGAN_ALERT_EMAIL_FROM") or "cgan-airflow@localhost"}


def late_after_minutes() -> float | None:
    """Minutes after a run is queued by which it must have finished, else a late-run alert (the
    DAG's Deadline Alert). CGAN_LATE_AFTER_MINUTES; unset, empty or 0: no Deadline Alert (the
    local default: Airflow 3.3.2's `airflow dags test` crashes after a run of a DAG with one,
    apache/airflow#73428). docker-compose.yaml sets 240 for the nightly deployment."""
    value = env_number("CGAN_LATE_AFTER_MINUTES", 0, 0, 10080, "minutes (0 or empty: no late-run alert)", float,
                       error=ConfigError)
    return value or None


def airflow_api() -> dict:
    """Where `cgan register-checkpoint` reaches Airflow's REST API: CGAN_AIRFLOW_API_URL (default
    http://127.0.0.1:8080), CGAN_AIRFLOW_USER, CGAN_AIRFLOW_PASSWORD (never printed)."""
    return {"url": (os.environ.get("CGAN_AIRFLOW_API_URL") or "http://127.0.0.1:8080").rstrip("/"),
            "user": os.environ.get("CGAN_AIRFLOW_USER") or "",
            "password": os.environ.get("CGAN_AIRFLOW_PASSWORD") or ""}
