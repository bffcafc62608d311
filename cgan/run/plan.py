"""The parameters of one generation run, checked before any work, and the shard plan.

The DAG's trigger form validates types and ranges with JSON schema; this module re-checks
every value (a run can also be triggered through the API or a config file) and refuses
anything that could escape a path or reach a tool's command line with a clear message.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cgan.ascend.atc import PRECISION_MODES
from cgan.ascend.errors import AscendError
from cgan.ascend.validate import check_soc_version
from cgan.errors import CganError
from cgan.paths import PROJECT_ROOT
from cgan.recipe.bins import MAX_GRIDS, MAX_SEED
from cgan.run.shard import Shard
from cgan.runtimes.ort_int8 import PRECISIONS

TARGETS = ("cpu", "ascend")
NPU_TOOLS = ("msame", "ais_bench")  # ascend: what runs the om (cgan.ascend.msame, cgan.ascend.ais_bench)
CHECKPOINT_RE = re.compile(r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/)?[A-Za-z0-9._/+=@-]+\Z")
MAX_GRIDS_PER_SHARD = 10_000  # no shard larger, automatic or typed: a retry redoes at most this much
MAX_SHARDS = 1024  # Airflow's [core] max_map_length default: a plan never has more
# Automatic sizing per target, (smallest, largest) shard before MAX_SHARDS forces larger ones:
# cpu, 2,500 grids (about 45-75 s of inference at 1 thread), so the 4-5 s an inference task
# instance costs besides (its start, the model's session, the bins, the hand-over, the
# scheduler's next loop) stays under 10%: at 10,000 grids on 2 cores, shards of 2,500 made the
# run 1.32x the pure inference time, shards of 1,000 1.45x (scheduler.md in docs/perf); ascend,
# 2.548 ms per grid on a 310P (the recipe), so 10,000 grids keep an NPU busy up to 25 s per
# task (a large run), against a few seconds of task start, model load and hand-over, while a
# small run still spreads over the NPUs (shards of 500 and up).
AUTO_SHARD_SIZES = {"cpu": (100, 2500), "ascend": (500, MAX_GRIDS_PER_SHARD)}
MAX_AUTO_GRIDS_PER_SHARD = AUTO_SHARD_SIZES["cpu"][1]  # the form's hint
MAX_DEVICES = 64
DEFAULT_CHECKPOINT = "models/cgan_generator.pth"
# The Airflow asset a new checkpoint is registered on (`cgan register-checkpoint`, or the REST API):
# the DAG runs on its events as well as nightly, with the checkpoint named in the event's extra.
CHECKPOINT_ASSET = "cgan_checkpoint"


# A seed given as text (the trigger form's Seed field; JSON numbers past 2**53 - 1 lose digits in a
# browser, digits do not): 1 to 19 digits, then range-checked like an integer seed.
SEED_DIGITS = re.compile(r"[0-9]{1,19}")
MAX_NUMBER_SEED = 2**53 - 1  # the largest seed the form takes as a JSON number (larger: as digits)


class ParamError(CganError):
    """A run parameter is missing, of the wrong type, out of range or unsafe."""

    retryable = False


@dataclass
class RunParams:
    num_grids: int = 100
    seed: int | None = None
    target: str = "cpu"
    soc_version: str = "Ascend310P3"
    devices: list[int] | None = None  # ascend: NPUs a shard may lease (None: any of its host's)
    checkpoint: str = DEFAULT_CHECKPOINT
    precision_mode: str = "force_fp16"
    grids_per_shard: int | None = None  # None: automatic (auto_shard_count)
    threads: int = 1
    keep_raw_outputs: bool = False
    precision: str = "fp32"  # cpu target: fp32 or int8 (ascend: precision_mode)
    npu_tool: str = "msame"
    # quality gate thresholds (cgan.quality.gate); None: the deployment's default (CGAN_GATE_*)
    gate_min_label_accuracy: float | None = None
    gate_min_class_accuracy: float | None = None
    gate_min_diversity: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ParamError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ParamError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def validate_soc_version(value) -> str:
    try:
        return check_soc_version(value)
    except AscendError as exc:
        raise ParamError(str(exc)) from None


def validate_checkpoint(value) -> str:
    if not isinstance(value, str) or not CHECKPOINT_RE.match(value) or ".." in value.split("/"):
        raise ParamError(
            f"checkpoint {value!r} must be a file path or s3://bucket/key made of letters, "
            "digits and ._/+=@- (no '..', spaces or shell characters)"
        )
    return value


def validate(conf: dict) -> RunParams:
    """A checked RunParams from a run's params (unknown keys are refused, not ignored)."""
    if not isinstance(conf, dict):
        raise ParamError(f"run parameters must be a JSON object, got {type(conf).__name__}")
    known = set(RunParams.__dataclass_fields__)
    unknown = sorted(set(conf) - known)
    if unknown:
        raise ParamError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    seed = conf.get("seed")
    if isinstance(seed, str):  # the form's Seed field keeps what was typed, digits or not
        if not SEED_DIGITS.fullmatch(seed):
            raise ParamError(f"seed must be a whole number 0..{MAX_SEED} (digits only), or empty for one derived "
                             f"from the logical date, got {seed!r}")
        conf = dict(conf, seed=int(seed))
    p = RunParams(**{k: v for k, v in conf.items()
                     if v is not None or k in ("seed", "devices") or k.startswith("gate_")})
    _int("num_grids", p.num_grids, 1, MAX_GRIDS)
    if p.seed is not None:
        _int("seed", p.seed, 0, MAX_SEED)
    _choice("target", p.target, TARGETS)
    validate_soc_version(p.soc_version)
    _choice("precision_mode", p.precision_mode, PRECISION_MODES)
    if p.devices is not None:
        if not isinstance(p.devices, list) or not 1 <= len(p.devices) <= MAX_DEVICES:
            raise ParamError(f"devices must be empty (any NPU of the worker's host) or a list of 1..{MAX_DEVICES} "
                             f"ACL device ids (each worker's NPUs from 0), got {p.devices!r}")
        for d in p.devices:
            _int("each device id", d, 0, 255)
        if len(set(p.devices)) != len(p.devices):
            raise ParamError(f"devices must not repeat an id, got {p.devices!r}")
    validate_checkpoint(p.checkpoint)
    if p.grids_per_shard is not None:
        _int("grids_per_shard", p.grids_per_shard, 1, MAX_GRIDS_PER_SHARD)
        least = math.ceil(p.num_grids / MAX_SHARDS)
        if p.grids_per_shard < least:
            raise ParamError(f"grids_per_shard {p.grids_per_shard} splits {p.num_grids:,} grids into more than "
                             f"{MAX_SHARDS} shards (Airflow's max_map_length): give at least {least}, or leave it "
                             "empty for automatic sizing")
    _int("threads", p.threads, 0, 64)
    _choice("npu_tool", p.npu_tool, NPU_TOOLS)
    if not isinstance(p.keep_raw_outputs, bool):
        raise ParamError(f"keep_raw_outputs must be true or false, got {p.keep_raw_outputs!r}")
    _choice("precision", p.precision, PRECISIONS)
    from cgan.quality.gate import THRESHOLD_PARAMS, check_threshold

    for name in THRESHOLD_PARAMS:
        if getattr(p, name) is not None:
            try:
                check_threshold(name, getattr(p, name))
            except ValueError as exc:
                raise ParamError(f"{exc} (empty: the deployment's default)") from None
    return p


def check_checkpoint_root(checkpoint: str, roots: list[str]) -> str:
    """checkpoint, when it lies under one of `roots` (folders, or s3://bucket[/prefix]); a local
    path is resolved first (relative to the project root, symlinks followed), so no link or
    absolute path leads out of the roots (CGAN_CHECKPOINT_ROOTS)."""
    if checkpoint.startswith("s3://"):
        inside = any(r.startswith("s3://") and checkpoint.startswith(r.rstrip("/") + "/") for r in roots)
    else:
        path = resolve_local_checkpoint(checkpoint).resolve()
        inside = any(not r.startswith("s3://") and path.is_relative_to(resolve_local_checkpoint(r).resolve())
                     for r in roots)
    if not inside:
        raise ParamError(f"checkpoint {checkpoint!r} is outside the checkpoint roots ({', '.join(roots)}): put it "
                         "under one of them, or have the deployment add its folder or s3://bucket to "
                         "CGAN_CHECKPOINT_ROOTS")
    return checkpoint


def derive_seed(logical_date: datetime) -> int:
    """The default seed of a run: its logical date as YYYYMMDDHHMMSS (so nightly runs differ)."""
    return int(logical_date.strftime("%Y%m%d%H%M%S"))


def resolve_local_checkpoint(checkpoint: str) -> Path:
    """A relative checkpoint path is relative to the project root (where models/ lives)."""
    path = Path(checkpoint)
    return path if path.is_absolute() else PROJECT_ROOT / path


def inference_slots(target: str, devices: list[int] | None, cpu_slots: int | None = None,
                    npu_slots: int | None = None) -> int | None:
    """How many inference tasks of one run work at once: cpu, `cpu_slots` (the deployment's
    CGAN_CPU_INFER_TASKS, passed in); ascend, the NPUs the run names, else `npu_slots` (the
    ascend_npu pool's size, CGAN_NPU_SLOTS, passed in); None when unknown."""
    if target == "cpu":
        return cpu_slots
    return len(devices) if devices else npu_slots


def auto_shard_count(num_grids: int, slots: int | None, target: str = "cpu") -> int:
    """Shards of an automatic plan: a multiple of the slots (each slot gets the same share), as
    few as keep every shard at most the target's largest automatic size, and no more than leave
    each at least its smallest (a small run does not fill every slot), never over MAX_SHARDS
    (then shards grow, up to MAX_GRIDS_PER_SHARD). Unknown slots: shards of the largest size.
    E.g. cpu, 6,000 grids on 2 slots: 4 shards of 1,500 (not 2500 + 2500 + 1000, whose last round
    leaves a slot idle); ascend, 100,000 grids on 8 NPUs: 16 shards of 6,250."""
    smallest, largest = AUTO_SHARD_SIZES[target]
    need = math.ceil(num_grids / largest)
    if slots and slots >= 1:
        filled = slots * math.ceil(need / slots)
        need = max(need, min(filled, num_grids // smallest))
    return max(1, min(need, MAX_SHARDS))


def plan_shards(num_grids: int, target: str, devices: list[int] | None, grids_per_shard: int | None, *,
                keep_raw_outputs: bool = False, parity_grids: int | None = None,
                slots: int | None = None, cpu_slots: int | None = None, npu_slots: int | None = None) -> list[Shard]:
    """Split grids 0..num_grids-1 into evenly sized shards, for either target: of at most
    grids_per_shard each when it is given, else automatically (auto_shard_count over `slots`, by
    default inference_slots(target, devices, cpu_slots, npu_slots)). Never more than MAX_SHARDS
    shards, never a shard over MAX_GRIDS_PER_SHARD (ParamError: validate() refuses such a run first).

    Each shard (cgan.run.shard.Shard) names the grids of the run's parity sample it holds
    (`parity`: the only raw outputs its inference task hands over, unless `keep_raw_outputs`),
    the grids of the run's label sample it holds (`judge`, judged by the classifier on the
    inference worker) and that flag. An ascend shard carries no device: its task leases a free
    NPU of its own host when it starts (cgan.ascend.lease), among `devices` when the run names
    them (None = any); how many NPUs work at once is the ascend_npu pool's size."""
    from cgan.quality.report import DEFAULT_PARITY_GRIDS, evenly_spaced, label_sample

    if grids_per_shard is None:
        count = auto_shard_count(num_grids, slots if slots is not None
                                 else inference_slots(target, devices, cpu_slots, npu_slots), target)
    else:
        count = math.ceil(num_grids / grids_per_shard)
    if count > MAX_SHARDS or math.ceil(num_grids / count) > MAX_GRIDS_PER_SHARD:
        most = MAX_SHARDS * MAX_GRIDS_PER_SHARD
        raise ParamError(f"{num_grids:,} grids cannot be split into at most {MAX_SHARDS} shards of at most "
                         f"{MAX_GRIDS_PER_SHARD:,} grids: give a larger grids_per_shard, or run fewer grids "
                         f"(at most {most:,})")
    parity = evenly_spaced(num_grids, DEFAULT_PARITY_GRIDS if parity_grids is None else parity_grids)
    judged = label_sample(num_grids)
    base, extra = divmod(num_grids, count)
    shards: list[Shard] = []
    start = 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        shards.append(Shard(
            index=i, start=start, count=size,
            parity=tuple(g for g in parity if start <= g < start + size),
            judge=tuple(g for g in judged if start <= g < start + size),
            keep_raw_outputs=bool(keep_raw_outputs),
            devices=tuple(devices) if target == "ascend" and devices else None,
        ))
        start += size
    return shards


RUN_KEY_RE = re.compile(r"[A-Za-z0-9_=@][A-Za-z0-9._=@-]{0,199}")  # a run id that is its own key
RUN_KEY_HASH_HEX = 20  # 80 bits of sha256: no second run id can be made to land on a given key


def safe_run_id(run_id: str) -> str:
    """The run's key part (workspace and publish prefix), injective: a run id that is already a
    safe key part (RUN_KEY_RE) is its own key; any other gets a readable form ('-' for other
    characters, at most 160 of them) + '+' + the first 20 hex digits of its sha256. No key of the
    first kind has a '+', so no run id can take another's key (docs/reliability.md)."""
    if not isinstance(run_id, str) or not run_id:
        raise ParamError(f"run id {run_id!r} is empty: give the run an id (Airflow always does)")
    if RUN_KEY_RE.fullmatch(run_id):
        return run_id
    readable = re.sub(r"[^A-Za-z0-9._=@-]", "-", run_id).strip("-.")[:160].rstrip("-.") or "run"
    return f"{readable}+{hashlib.sha256(run_id.encode('utf-8', 'surrogatepass')).hexdigest()[:RUN_KEY_HASH_HEX]}"


def event_checkpoint(events: list[dict]) -> dict | None:
    """The checkpoint a run triggered by checkpoint asset events is to use: the newest event's
    extra["checkpoint"], checked like the form's field (CHECKPOINT_RE; the roots are checked by
    make_plan). `events`: {"extra": {...}, "timestamp": ISO time} of the run's triggering events
    of CHECKPOINT_ASSET; None when there are none (a nightly or manual run)."""
    if not events:
        return None
    newest = max(events, key=lambda e: str(e.get("timestamp") or ""))
    extra = newest.get("extra") or {}
    checkpoint = extra.get("checkpoint") if isinstance(extra, dict) else None
    where = f"the {CHECKPOINT_ASSET} asset event of {newest.get('timestamp') or '?'}"
    if checkpoint is None:
        raise ParamError(f"{where} names no checkpoint (its extra is {extra!r}): register one with "
                         "`cgan register-checkpoint <path|s3://bucket/key>`, or POST the event with "
                         'extra {"checkpoint": "<path|s3://bucket/key>"}')
    try:
        validate_checkpoint(checkpoint)
    except ParamError as exc:
        raise ParamError(f"{where}: {exc}") from None
    return {"checkpoint": checkpoint, "source": where, "events": len(events)}


FUTURE_SKEW = timedelta(hours=1)  # clocks of the trigger and the worker may differ this much


def check_logical_date(logical_date: datetime, now: datetime | None = None) -> datetime:
    """A run's logical date, not in the future: latest.json follows the newest logical date, so a
    run dated 2099 would stay "latest" for every later night. ParamError otherwise."""
    if not isinstance(logical_date, datetime):
        raise ParamError(f"logical date {logical_date!r} is not a date and time")
    when = logical_date if logical_date.tzinfo else logical_date.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    if when > now + FUTURE_SKEW:
        raise ParamError(f"logical date {when.isoformat()} is in the future (now {now.isoformat(timespec='seconds')}):"
                         " latest.json follows the newest logical date, so this run would stay the latest over every "
                         "later night. Trigger it without a logical date, or with one not after now")
    return logical_date


def make_plan(conf: dict, *, run_id: str, logical_date: datetime, artifact_root: str,
              default_target: str = "cpu", checkpoint_roots: list[str] | None = None,
              checkpoint_events: list[dict] | None = None, cpu_slots: int | None = None,
              npu_slots: int | None = None, now: datetime | None = None) -> dict:
    """Everything the tasks of one run need: checked params, seed, workspace, shards, publish prefix,
    and the checkpoint the run uses (every task reads it from here, never from the params).
    With `checkpoint_events` (a run triggered by CHECKPOINT_ASSET), the newest event's checkpoint
    replaces the params' (event_checkpoint). With `checkpoint_roots`, the checkpoint must lie
    under one of them (check_checkpoint_root). `cpu_slots`, `npu_slots`: the inference tasks that
    may run at once on each target (size an automatic plan; see inference_slots). A logical date
    after `now` (default the clock) + FUTURE_SKEW is refused (check_logical_date)."""
    check_logical_date(logical_date, now)
    conf = dict(conf)
    if conf.get("target") is None:
        conf["target"] = default_target
    registered = event_checkpoint(checkpoint_events or [])
    if registered is not None:
        conf["checkpoint"] = registered["checkpoint"]
    params = validate(conf)
    if checkpoint_roots is not None:
        try:
            check_checkpoint_root(params.checkpoint, checkpoint_roots)
        except ParamError as exc:
            if registered is None:
                raise
            raise ParamError(f"{registered['source']}: {exc}") from None
    from cgan.layout.published import run_prefix
    from cgan.layout.workspace import workspace_uri

    seed = params.seed if params.seed is not None else derive_seed(logical_date)
    run_key = safe_run_id(run_id)
    return {
        "params": dict(params.as_dict(), seed=seed),
        "seed": seed,
        "checkpoint": params.checkpoint,
        "checkpoint_source": registered["source"] if registered else "params",
        "target": params.target,
        "workspace": workspace_uri(artifact_root, run_key),
        "shards": [s.as_xcom() for s in plan_shards(params.num_grids, params.target, params.devices,
                                                    params.grids_per_shard, keep_raw_outputs=params.keep_raw_outputs,
                                                    cpu_slots=cpu_slots, npu_slots=npu_slots)],
        "run_prefix": run_prefix(run_key),  # in the publish bucket
        "logical_date": logical_date.isoformat(),
    }


def describe_plan(plan: dict, *, seed_given: bool) -> list[str]:
    """A plan as a few lines for the task log (what runs, where it goes), not its raw dict."""
    params, shards = plan["params"], plan["shards"]
    grids = sum(s["count"] for s in shards)
    sizes = sorted({s["count"] for s in shards})
    size = f"{sizes[0]:,}" if len(sizes) == 1 else f"{sizes[0]:,} to {sizes[-1]:,}"
    how = "as set" if params.get("grids_per_shard") else "automatic"
    if plan["target"] == "ascend":
        runs_on = (f"target ascend: {params['npu_tool']} on the Ascend workers, soc {params['soc_version']}, "
                   f"precision mode {params['precision_mode']}")
        if params.get("devices"):
            runs_on += f", devices {', '.join(map(str, params['devices']))} only"
    else:
        runs_on = f"target cpu: ONNX Runtime {params['precision']}, {params['threads']} thread(s) per task"
    return [
        f"{grids:,} grid(s), seed {plan['seed']} ({'as given' if seed_given else 'from the logical date'})",
        runs_on,
        f"{len(shards):,} shard(s) of {size} grids ({how})",
        f"checkpoint {plan['checkpoint']}" + ("" if plan.get("checkpoint_source", "params") == "params"
                                              else f" (from {plan['checkpoint_source']})"),
        f"workspace {plan['workspace']}; published under {plan['run_prefix']}/",
    ]
