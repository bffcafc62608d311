"""cgan_generation: nightly and on-demand CGAN batch generation, published to object storage.

Schedule: nightly (the cron CGAN_SCHEDULE, default 02:00 in CGAN_TIMEZONE, UTC) OR when a new
checkpoint is registered (an event of the asset `cgan_checkpoint`: `cgan register-checkpoint`;
the run uses its checkpoint), and whenever triggered from the form. Airflow's header reads
"Schedule: cgan_checkpoint" for this asset-or-time schedule; "Next Run" is the nightly one.

plan (checked params, the run's checkpoint) -> export_onnx -> input_bins (mapped over shards) -> choose_target
    ascend: atc_convert -> msame_infer (mapped over shards, queue `ascend`, pool `ascend_npu`)
    cpu:    onnxruntime_infer (mapped over shards, default queue)
    (each inference task renders and judges its own grids on its worker)
-> postprocess (quality report, perf, quality gate verdict) -> publish (manifest last, then
latest.json unless the gate rejected the run) -> quality_gate (fails a rejected run) and
   cleanup (the published run's workspace, and workspaces older than the retention)

No logic here: the steps are operators in operators/ that call the cgan library; deployment
settings come from the environment (cgan/settings.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, TriggerRule, task

# airflow.sdk exports these too, but its type stub (__init__.pyi, 3.3.2) does not list them
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from cgan import settings
from cgan.ascend.validate import SOC_VERSION_RE
from cgan.recipe.bins import MAX_GRIDS, MAX_SEED
from cgan.run.plan import (
    CHECKPOINT_ASSET,
    CHECKPOINT_RE,
    DEFAULT_CHECKPOINT,
    MAX_GRIDS_PER_SHARD,
    MAX_NUMBER_SEED,
    NPU_TOOLS,
    PRECISION_MODES,
    SEED_DIGITS,
    TARGETS,
)
from cgan.runtimes.ort_int8 import PRECISIONS
from operators.ascend_inference import AscendInferenceOperator
from operators.atc_convert import AtcConvertOperator
from operators.cleanup import CleanupWorkspaceOperator
from operators.export_onnx import ExportOnnxOperator
from operators.input_bins import InputBinsOperator
from operators.notify import FailureAlert, late_run_alert
from operators.onnxruntime_inference import OnnxRuntimeInferenceOperator
from operators.postprocess import PostprocessOperator
from operators.publish import PublishRunOperator

# Number fields bound with exclusiveMinimum/exclusiveMaximum, never minimum/maximum: Airflow 3.3's
# trigger form passes minimum/maximum to its number input, which clamps a typed 0 to 1 on blur (the
# run would silently change); the exclusive bounds are checked by the form's JSON schema
# validation, which refuses the trigger with a message. gate_* fractions are checked by `plan`.
PARAMS = {
    "num_grids": Param(settings.num_grids(), type="integer", exclusiveMinimum=0, exclusiveMaximum=MAX_GRIDS + 1,
                       title="Grids",
                       description=f"How many 10x10 grids (100 digits each) to generate: 1 to {MAX_GRIDS:,}."),
    # An integer, or digits as a string. With a string type the form keeps what was typed (its number
    # input drops "abc", which then ran a date-derived seed); the form parses a typed number in the
    # browser, where integers past MAX_NUMBER_SEED lose digits, so a JSON integer seed stops there (a
    # rounded one is refused, never run) and a larger one up to MAX_SEED goes as a string.
    "seed": Param(None, type=["null", "integer", "string"], pattern=f"^{SEED_DIGITS.pattern}$",
                  exclusiveMinimum=-1, exclusiveMaximum=MAX_NUMBER_SEED + 1, title="Seed",
                  description=f"Noise seed, a whole number 0 to {MAX_NUMBER_SEED:,}; up to {MAX_SEED:,} in double "
                              'quotes ("...": a browser rounds larger numbers). Empty: derived from the run\'s '
                              "logical date (YYYYMMDDHHMMSS), so nightly runs differ and each can be reproduced."),
    "target": Param(settings.default_target(), type="string", enum=list(TARGETS), title="Target",
                    description="ascend: atc + msame on the NPU workers (queue `ascend`); "
                                "cpu: ONNX Runtime on any worker."),
    "soc_version": Param(settings.soc_version(), type="string", pattern=SOC_VERSION_RE.pattern,
                         title="SoC version", description="atc --soc_version: 'Ascend' + the Name column "
                                                          "of `npu-smi info`, e.g. Ascend310P3."),
    "devices": Param(settings.devices(), type=["null", "array"], minItems=1, maxItems=64, uniqueItems=True,
                     items={"type": "integer", "minimum": 0, "maximum": 255}, title="Devices",
                     description="Optional restriction: the ACL device ids (the worker's NPUs counted from 0; "
                                 "on a bare host the Device column of `npu-smi info`) a shard may lease on "
                                 "its Ascend worker. Empty: any free NPU."),
    "npu_tool": Param(settings.npu_tool(), type="string", enum=list(NPU_TOOLS), title="NPU tool",
                      description="target ascend: msame (the recipe's tool, a process per 1,000 bins) or "
                                  "ais_bench (current CANN's runner, through its Python API in a process "
                                  "that only feeds the NPU: the busier NPU)."),
    "checkpoint": Param(DEFAULT_CHECKPOINT, type="string", pattern=CHECKPOINT_RE.pattern,
                        title="Checkpoint", description="Generator state_dict: a path (relative to the "
                        "project root) or s3://bucket/key. Default: the committed demo model."),
    "precision_mode": Param("force_fp16", type="string", enum=list(PRECISION_MODES), title="Precision mode",
                            description="atc --precision_mode (atc's own default is force_fp16; "
                                        "must_keep_origin_dtype keeps fp32)."),
    "grids_per_shard": Param(None, type=["null", "integer"], exclusiveMinimum=0,
                             exclusiveMaximum=MAX_GRIDS_PER_SHARD + 1,
                             title="Grids per shard",
                             section="Advanced", description=f"Shard size, 1 to {MAX_GRIDS_PER_SHARD:,} (both "
                                                             "targets; on ascend each shard leases one NPU while "
                                                             "it runs). Empty: automatic, sized for the target "
                                                             "and balanced over the inference tasks that run at "
                                                             "once."),
    "threads": Param(1, type="integer", exclusiveMinimum=-1, exclusiveMaximum=65, title="Threads per inference task",
                     section="Advanced", description="ONNX Runtime intra-op threads, 0 to 64 (0 = all cores)."),
    "keep_raw_outputs": Param(False, type="boolean", title="Keep raw outputs", section="Advanced",
                              description="Keep every raw output bin (the recipe's output folder) in the run's "
                                          "workspace. Off: only the parity sample's are handed over; the "
                                          "grids are rendered on the inference workers."),
    "precision": Param(settings.cpu_precision(), type="string", enum=list(PRECISIONS), title="CPU precision",
                       description="Target cpu: fp32, or int8 (ONNX Runtime static quantization, built once "
                                   "per model; label accuracy within 0.005 of fp32, see docs/performance.md). "
                                   "Target ascend uses Precision mode."),
    # quality gate (cgan.quality.gate): empty = the deployment's default (CGAN_GATE_*)
    "gate_min_label_accuracy": Param(None, type=["null", "number"], section="Advanced",
                                     title="Gate: least label accuracy",
                                     description="A fraction, 0 to 1. Empty: the deployment's "
                                                 f"{settings.gate_thresholds().min_label_accuracy}."),
    "gate_min_class_accuracy": Param(None, type=["null", "number"], section="Advanced",
                                     title="Gate: least accuracy of the worst digit",
                                     description="A fraction, 0 to 1. Empty: the deployment's "
                                                 f"{settings.gate_thresholds().min_class_accuracy}."),
    "gate_min_diversity": Param(None, type=["null", "number"], section="Advanced",
                                title="Gate: least feature diversity of the worst digit",
                                description="A fraction, 0 to 1 (0 = collapsed to one style per digit, 1 = as "
                                            "varied as real digits). Empty: the deployment's "
                                            f"{settings.gate_thresholds().min_diversity}."),
}

# Updated by every publish (accepted or rejected: its extra's `gate` says which); other DAGs can
# schedule on it and read run_id, bucket, manifest, grids, label_accuracy, grids_per_s from the event.
# Named by its URI, so a deployment that changes its bucket gets a new asset (Airflow marks an asset
# whose name moved to another URI inactive, and a task with an inactive outlet fails).
def OUTPUT(task_id: str, key: str | None = None) -> Any:
    """A template that renders (natively: render_template_as_native_obj) to an upstream task's
    XCom, or one key of it; unlike an XComArg it draws no edge in the graph. Typed Any: it stands
    for the value an operator argument receives once rendered."""
    pulled = f"ti.xcom_pull(task_ids='{task_id}')"
    return "{{ " + (f"{pulled}['{key}']" if key else pulled) + " }}"


def PLAN(field: str) -> Any:
    """A field of the plan task's XCom (cgan.run.plan.make_plan) as a template (OUTPUT)."""
    return OUTPUT("plan", field)


PUBLISHED_RUN = Asset(f"s3://{settings.publish_bucket()}/runs")

# A new checkpoint registered (`cgan register-checkpoint`, or POST /api/v2/assets/events with extra
# {"checkpoint": ...}) starts a run with it; `plan` checks it like the form's field (CHECKPOINT_RE,
# CGAN_CHECKPOINT_ROOTS).
CHECKPOINT = Asset(CHECKPOINT_ASSET)

# Late-run alert only where CGAN_LATE_AFTER_MINUTES is set (docker-compose: 240): with a Deadline
# Alert, Airflow 3.3.2's `airflow dags test` (make demo, the DAG tests) crashes after the run
# (apache/airflow#73428). AsyncCallback: the scheduler queues it when the deadline passes, the
# triggerer runs it; the deadline is dropped when the run finishes first.
LATE_AFTER_MINUTES = settings.late_after_minutes()
DEADLINE = DeadlineAlert(
    reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(minutes=LATE_AFTER_MINUTES),
    callback=AsyncCallback(late_run_alert, kwargs={"late_after_minutes": LATE_AFTER_MINUTES}),
) if LATE_AFTER_MINUTES else None

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=settings.retry_delay_s()),  # CGAN_RETRY_DELAY_S, default 30
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=2),
    "on_failure_callback": [FailureAlert()],  # CGAN_ALERT_*: webhook and/or e-mail (cgan.integrations.alerts)
}

with DAG(
    dag_id="cgan_generation",
    # Airflow shows an asset-or-time schedule as the asset's name alone ("cgan_checkpoint"): the
    # description, shown in the DAG list and header, says what the schedule is
    description=f"Runs nightly (cron '{settings.schedule()}', {settings.timezone()}) and when a checkpoint is "
                "registered: CGAN digit grids made, checked and published",
    # nightly (CGAN_SCHEDULE) OR when a checkpoint is registered
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(settings.schedule(), timezone=settings.timezone()),
                                 assets=CHECKPOINT),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=settings.max_active_tasks(),  # every inference slot busy at once, not Airflow's 16
    params=PARAMS,
    default_args=DEFAULT_ARGS,
    tags=["cgan", "ascend"],
    doc_md=__doc__,
    # templates render to Python objects: the plan's shard list and params reach the operators
    # as a list and a dict through PLAN(...), not one XComArg edge per field
    render_template_as_native_obj=True,
    deadline=DEADLINE,
) as dag:

    # the plan is logged as a few readable lines, not as Airflow's dump of the returned dict
    @task(multiple_outputs=True, retries=0, execution_timeout=timedelta(minutes=2), show_return_value_in_logs=False)
    def plan(params=None, run_id=None, logical_date=None, dag_run=None, triggering_asset_events=None) -> dict:
        """Check every parameter and lay out the run: seed, workspace, shards, and the checkpoint
        (a run started by a checkpoint asset event uses the event's)."""
        import logging

        from cgan.run.plan import describe_plan, make_plan

        events = [{"extra": dict(e.extra or {}), "timestamp": e.timestamp.isoformat()}
                  for e in (triggering_asset_events or {}).get(CHECKPOINT, [])]
        planned = make_plan({k: params[k] for k in PARAMS}, run_id=run_id,
                            logical_date=logical_date or dag_run.run_after,
                            artifact_root=settings.artifact_root(), default_target=settings.default_target(),
                            checkpoint_roots=settings.checkpoint_roots(), checkpoint_events=events,
                            cpu_slots=settings.cpu_infer_tasks(), npu_slots=settings.npu_slots())
        for line in describe_plan(planned, seed_given=params["seed"] is not None):
            logging.getLogger("airflow.task").info("plan: %s", line)
        return planned

    @task(retries=0, execution_timeout=timedelta(minutes=1))
    def shards(planned: list[dict]) -> list[dict]:
        """The plan's shard list as a task's return value, for the mapped tasks to expand over."""
        return planned

    @task.branch(retries=0, execution_timeout=timedelta(minutes=1))
    def choose_target(target: str) -> str:
        return "atc_convert" if target == "ascend" else "onnxruntime_infer"

    # The graph shows the data flow (plan -> export -> bins -> target -> inference -> postprocess ->
    # publish): a task reads the plan's fields through templates (PLAN), which draw no edge; the
    # XComArg left is the shard list that the mapped tasks expand over. Airflow's typing accepts
    # neither run["key"] nor an XComArg for an operator's list argument without its in-repo mypy
    # plugin (apache/airflow#39514).
    run: Any = plan()
    shard_list = shards(PLAN("shards"))  # Airflow maps over a task's return value, not a key of it
    export = ExportOnnxOperator(task_id="export_onnx", workspace=PLAN("workspace"),
                                checkpoint=PLAN("checkpoint"), aws_conn_id=settings.s3_conn_id(),
                                execution_timeout=timedelta(minutes=20))
    bins = InputBinsOperator.partial(task_id="input_bins", workspace=PLAN("workspace"), seed=PLAN("seed"),
                                     aws_conn_id=settings.s3_conn_id(),
                                     execution_timeout=timedelta(minutes=10)).expand(shard=shard_list)
    branch = choose_target(PLAN("target"))
    atc = AtcConvertOperator(task_id="atc_convert", workspace=PLAN("workspace"),
                             onnx_uri=OUTPUT("export_onnx", "onnx_uri"),
                             soc_version="{{ params.soc_version }}",
                             precision_mode="{{ params.precision_mode }}",
                             toolkit_home=settings.ascend_toolkit(), atc_from_path=settings.atc_from_path(),
                             aws_conn_id=settings.s3_conn_id(), execution_timeout=timedelta(hours=6))
    msame = AscendInferenceOperator.partial(
        task_id="msame_infer", workspace=PLAN("workspace"), om_uri=OUTPUT("atc_convert", "om_uri"),
        om_name=OUTPUT("atc_convert", "om_name"), soc_version=OUTPUT("atc_convert", "soc_version"),
        om_cann_version=OUTPUT("atc_convert", "toolkit_version"),
        queue="ascend", pool="ascend_npu", msame_path=settings.msame(),
        toolkit_home=settings.ascend_toolkit(), aws_conn_id=settings.s3_conn_id(), execution_timeout=timedelta(hours=1),
        npu_tool="{{ params.npu_tool }}", bucket=settings.publish_bucket(), run_prefix=PLAN("run_prefix"),
    ).expand(shard=shard_list)
    onnxruntime = OnnxRuntimeInferenceOperator.partial(
        task_id="onnxruntime_infer", workspace=PLAN("workspace"), onnx_uri=OUTPUT("export_onnx", "onnx_uri"),
        threads="{{ params.threads }}", precision="{{ params.precision }}", aws_conn_id=settings.s3_conn_id(),
        execution_timeout=timedelta(hours=1), bucket=settings.publish_bucket(), run_prefix=PLAN("run_prefix"),
        max_active_tis_per_dagrun=settings.cpu_infer_tasks(),  # tasks x threads <= cores (CGAN_CPU_INFER_TASKS)
    ).expand(shard=shard_list)
    post = PostprocessOperator(task_id="postprocess", workspace=PLAN("workspace"), shards=PLAN("shards"),
                               checkpoint=PLAN("checkpoint"), run_params=PLAN("params"),
                               aws_conn_id=settings.s3_conn_id(), execution_timeout=timedelta(hours=1),
                               trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    publish = PublishRunOperator(task_id="publish", workspace=PLAN("workspace"), bucket=settings.publish_bucket(),
                                 run_prefix=PLAN("run_prefix"), params_used=PLAN("params"), shards=PLAN("shards"),
                                 logical_date=PLAN("logical_date"), aws_conn_id=settings.s3_conn_id(),
                                 outlets=[PUBLISHED_RUN],
                                 execution_timeout=timedelta(hours=1))
    cleanup = CleanupWorkspaceOperator(task_id="cleanup", workspace=PLAN("workspace"),
                                       publish_bucket=settings.publish_bucket(), aws_conn_id=settings.s3_conn_id(),
                                       execution_timeout=timedelta(minutes=30))

    @task(retries=0, execution_timeout=timedelta(minutes=1))
    def quality_gate(summary: dict) -> str:
        """Fail the run when postprocess's verdict is rejected, naming each metric, value and threshold
        (the run is published for inspection by then, marked rejected, and latest.json did not move)."""
        import logging

        from cgan.quality.gate import QualityGateFailed

        for line in summary.get("gate_checks") or ():
            logging.getLogger("airflow.task").info("quality gate: %s", line)
        if summary.get("gate") == "rejected":
            raise QualityGateFailed("quality gate: the run is rejected: " + "; ".join(summary["gate_failures"]))
        return summary.get("gate", "accepted")

    gate = quality_gate(OUTPUT("postprocess"))

    run >> [shard_list, export]
    export >> bins >> branch >> [atc, onnxruntime]  # export first: a bad checkpoint fails before any bins
    atc >> msame
    [msame, onnxruntime] >> post >> publish >> [gate, cleanup]
