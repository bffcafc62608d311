"""ais_bench (msame's successor in current CANN) through its Python API, in this process.

    from ais_bench.infer.interface import InferSession
    session = InferSession(device_id, om_path, loop=1)
    outputs = session.infer([x])                # ndarrays
    session.sumary().exec_time_list             # ms per execute; newer releases: summary()

(Ascend/tools ais-bench_workload/tool/ais_bench, infer/interface.py). Bins go through the loop
every local runtime shares (cgan.runtimes.folder_runner): outputs are written and handed to
`on_output` (the shard's grid renderer) on a second thread while the NPU computes the next call.
perf.json's latencies are ais_bench's own per-execute times (exec_time_list, host time around the
synchronous execute, as msame's), warm-up calls excluded; the host's wall time around each
call is the fallback, said in the notes, when a release reports no list.

Output dtypes: an om converted without `--output_type=FP32` gives float16 arrays; they are
converted to float32 (exact: every float16 is a float32), so such an om is accepted here, its
values carrying float16 rounding (about 5e-4 near 1, under one pixel level of a grid).

ACL once per process: aclruntime's TensorContext is a process-wide singleton that calls aclInit
once; a session's finalize() calls aclFinalize, after which no session of the same process can
open a device (backend/base DeviceManager, TensorContext; acl.h: aclInit only once per process).
So a run never calls finalize(): it drops its session (whose destructor unloads the model) and
ACL stays up for the next run in the process, finalized when the process exits. An Airflow task
runs in a process of its own; `cgan infer` is one run per process. If something else finalized
ACL in this process, opening the device fails with AisBenchError naming that constraint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cgan.ascend.errors import AisBenchError, AscendError
from cgan.layout.tensors import SAMPLES_PER_GRID
from cgan.recipe.perf import make_record
from cgan.runtimes.folder_runner import InferenceRun, OnOutput, Progress, run_folder

INSTALL_HINT = ("install the two wheels of Ascend/tools ais-bench_workload/tool/ais_bench on this worker: "
                "aclruntime-<ver>-cp3X-...-linux_<arch>.whl (the C++ backend, built against this host's "
                "CANN) and ais_bench-<ver>-py3-none-any.whl; or use npu_tool=msame")


def load_session_class():
    """ais_bench's InferSession; AscendError naming the missing package and the fix."""
    try:
        from ais_bench.infer.interface import InferSession
    except ModuleNotFoundError as exc:
        missing = (exc.name or "ais_bench").split(".")[0]
        raise AscendError(f"npu_tool ais_bench: the Python package {missing!r} is not installed on this "
                          f"worker ({exc}); {INSTALL_HINT}") from None
    except ImportError as exc:  # aclruntime present but its CANN libraries are not found
        raise AscendError(f"npu_tool ais_bench cannot be imported on this worker ({exc}): source the CANN "
                          f"set_env.sh in the worker's environment (CANN_PATH), or {INSTALL_HINT}") from None
    return InferSession


def summary_of(session):
    """session.summary() (newer ais_bench) or session.sumary() (the spelling of older releases)."""
    for name in ("summary", "sumary"):
        method = getattr(session, name, None)
        if callable(method):
            return method()
    return None


def exec_times(session) -> list[float] | None:
    info = summary_of(session)
    times = getattr(info, "exec_time_list", None) if info is not None else None
    return [float(t) for t in times] if times is not None else None


def run_ais_bench(
    om: str | os.PathLike,
    input_dir: str | os.PathLike,
    output_root: str | os.PathLike,
    *,
    device: int,
    batch: int = SAMPLES_PER_GRID,
    warmup: int = 1,
    progress: Progress | None = None,
    on_output: OnOutput | None = None,
    session_factory: Callable | None = None,
) -> InferenceRun:
    """Every bin of input_dir through the om on NPU `device`; perf.json from ais_bench's timings."""
    om = Path(om)
    if not om.is_file():
        raise AscendError(f"om model {om} not found")
    factory = session_factory or load_session_class()
    try:
        live = {"session": factory(device, str(om), loop=1)}
    except RuntimeError as exc:  # aclruntime: bad device id, model load failure, ACL finalized
        hint = f": {ACL_FINALIZED}" if _acl_finalized(exc) else ""
        raise AisBenchError(f"ais_bench could not open NPU {device} with {om.name}: {exc}{hint}") from None
    calls: list[int] = []

    def execute(x: np.ndarray) -> np.ndarray:
        try:
            outputs = live["session"].infer([np.ascontiguousarray(x, dtype=np.float32)])
        except RuntimeError as exc:  # aclruntime: input size mismatch, execute failure
            raise AisBenchError(f"ais_bench execute on NPU {device} failed: {exc}") from None
        calls.append(1)
        return np.asarray(outputs[0], dtype=np.float32)

    try:
        run = run_folder(execute, batch=batch, input_dir=input_dir, output_root=output_root,
                         backend="ais_bench", device=f"npu:{device}", threads=None, warmup=warmup,
                         progress=progress, on_output=on_output,
                         tool={"ais_bench": _version(), "model": str(om)})
        times = exec_times(live["session"])
    finally:
        # no finalize(): it would end ACL for this process (aclruntime cannot initialise it again);
        # the last reference goes, the session's destructor unloads the model, ACL stays up
        live.clear()
    measured = len(calls) - warmup
    perf = run.perf
    if times is not None and len(times) == len(calls):
        perf = make_record(
            backend="ais_bench", device=perf.device, batch=perf.batch, latencies_ms=times[warmup:],
            grids=perf.grids, warmup_calls=warmup, threads=None, wall_s=perf.wall_s, tool=perf.tool,
            notes=[f"latency = ais_bench's exec_time_list: one execute of batch {perf.batch}, host time "
                   "around the synchronous execute (as msame's)", f"{warmup} warm-up call(s) excluded"],
        )
    else:
        perf.notes.append(f"ais_bench reported {len(times) if times is not None else 'no'} execute time(s) for "
                          f"{len(calls)} call(s): latencies are host wall time around each infer call")
    assert perf.calls == measured
    perf.write(run.output_dir)
    return InferenceRun(output_dir=run.output_dir, outputs=run.outputs, perf=perf)


ACL_FINALIZED = ("ACL was finalized earlier in this process (an ais_bench session's finalize() calls "
                 "aclFinalize), and aclruntime initialises ACL only once per process: run each ais_bench "
                 "run in a process of its own (an Airflow task does; `cgan infer` is one run per process) "
                 "and do not call finalize() between runs")


def _acl_finalized(exc: BaseException) -> bool:
    """aclruntime's error for a device opened after aclFinalize: ACL_ERROR_UNINITIALIZE (100001)."""
    text = str(exc)
    return "100001" in text or "not initialized" in text.lower()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ais_bench")
    except PackageNotFoundError:
        return "unknown"
