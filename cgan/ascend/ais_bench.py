"""ais_bench (msame's successor in current CANN) through its Python API, in a process of its own.

    from ais_bench.infer.interface import InferSession
    session = InferSession(device_id, om_path, loop=1)
    outputs = session.infer([x])                # ndarrays
    calls = session.infer_pipeline([[x1], [x2]])  # releases after 2023-06: one list per call
    session.sumary().exec_time_list             # ms per execute; newer releases: summary()

(Ascend/tools ais-bench_workload/tool/ais_bench, infer/interface.py). aclruntime's run() holds
the GIL while the NPU computes, so the session runs in a child process
(cgan.ascend.ais_bench_process) that only feeds the NPU: outputs come back through a ring in
shared memory (a memfd), and this process writes them and hands them to `on_output` (the shard's grid renderer)
while the NPU computes the next call; where ais_bench has infer_pipeline, 16 calls at a time
reach the NPU back to back. The protocol: docs/ascend.md, "ais_bench's NPU process".
perf.json's latencies are ais_bench's own per-execute times (exec_time_list, host time around the
synchronous execute, as msame's), warm-up calls excluded; the host's wall time around each
call is the fallback, said in the notes, when a release reports no list.

Output dtypes: an om converted without `--output_type=FP32` gives float16 arrays; they are
converted to float32 (exact: every float16 is a float32), so such an om is accepted here, its
values carrying float16 rounding (about 5e-4 near 1, under one pixel level of a grid).

ACL once per process: aclruntime's TensorContext is a process-wide singleton that calls aclInit
once; a session's finalize() calls aclFinalize, after which no session of the same process can
open a device (backend/base DeviceManager, TensorContext; acl.h: aclInit only once per process).
Each run's session lives in a process of its own and is never finalized (ACL ends with that
process), so runs in one task or one `cgan` process never meet a finalized ACL.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np

from cgan.ascend.errors import AisBenchError, AscendError
from cgan.layout.tensors import IMAGE_SIZE, SAMPLES_PER_GRID, SUPPORTED_CHANNELS
from cgan.recipe.bins import BinsPack
from cgan.recipe.outputs import new_run_dir
from cgan.recipe.perf import make_record
from cgan.runtimes.folder_runner import (
    InferenceRun,
    OnOutput,
    OutputWriter,
    Progress,
    check_batch,
    check_output,
    resolve_inputs,
)

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
    input_dir: str | os.PathLike | BinsPack,
    output_root: str | os.PathLike,
    *,
    device: int,
    batch: int = SAMPLES_PER_GRID,
    warmup: int = 1,
    progress: Progress | None = None,
    on_output: OnOutput | None = None,
    pass_fds: tuple[int, ...] = (),
    write_stems: Collection[str] | None = None,
) -> InferenceRun:
    """Every bin of input_dir through the om on NPU `device`; perf.json from ais_bench's timings.
    `input_dir` may be a shard's BinsPack instead of a folder: the NPU's process then reads each
    call's inputs from the pack at their offset, and outputs are named as the split bins would be;
    a pack still `arriving` is waited for while that process opens its session.

    The session runs in a process of its own (cgan.ascend.ais_bench_process); this one writes
    each output and hands it to `on_output` while the NPU computes the next. `pass_fds`: open
    file descriptors that process keeps (the NPU lease's lock, held while it runs).
    `write_stems`: the grid stems whose raw output bin is written (None: every one); the others
    are only handed to `on_output`, with the path they would have had."""
    om = Path(om)
    if not om.is_file():
        raise AscendError(f"om model {om} not found")
    check_batch(batch, warmup)
    session_class = load_session_class()  # importable: the error and its fix before a process starts
    chunk = NpuProcess.PIPELINE_CALLS if callable(getattr(session_class, "infer_pipeline", None)) else 1
    # a pack still on its way (run_shard downloads it meanwhile) is waited for after the NPU process starts,
    # so its session opens during the download
    early = None if isinstance(input_dir, BinsPack) and input_dir.arriving else resolve_inputs(input_dir)
    wall_start = time.perf_counter()
    run_dir = new_run_dir(output_root)
    latencies: list[float] = []
    slot_bytes = batch * max(SUPPORTED_CHANNELS) * IMAGE_SIZE * IMAGE_SIZE * 4
    with NpuProcess(device, om, batch, warmup, slot_bytes, pass_fds, chunk) as npu:
        bins, pack = early or resolve_inputs(input_dir)
        npu.feed({"pack": str(pack)} if pack else {"bins": [str(b) for b in bins]}, len(bins))
        writer = OutputWriter(run_dir, len(bins), write_stems, on_output, progress)
        for start, y, ms in npu.outputs():
            check_output(y, batch, "ais_bench", bins[start])
            latencies.append(ms)
            writer.group(bins[start : start + batch // SAMPLES_PER_GRID], y)
        times = npu.times
        process_note = (f"the session ran in a process of its own, open {npu.opened_s:.2f} s after its start; it "
                        f"waited {npu.waited_s:.2f} s for this process to take its outputs (the NPU idle meanwhile); "
                        + (f"calls went to the NPU {chunk} at a time through infer_pipeline" if chunk > 1 else
                           "one call at a time through infer (this ais_bench has no infer_pipeline)"))
    if times is not None and len(times) == len(latencies) + warmup:
        latencies = times[warmup:]
        notes = [f"latency = ais_bench's exec_time_list: one execute of batch {batch}, host time around the "
                 "synchronous execute (as msame's)"]
    else:
        notes = [f"ais_bench reported {len(times) if times is not None else 'no'} execute time(s) for "
                 f"{len(latencies) + warmup} call(s): latencies are host wall time around each infer call"]
    perf = make_record(backend="ais_bench", device=f"npu:{device}", batch=batch, latencies_ms=latencies,
                       grids=writer.made, warmup_calls=warmup, threads=None,
                       wall_s=time.perf_counter() - wall_start, tool={"ais_bench": _version(), "model": str(om)},
                       notes=[*notes, f"{warmup} warm-up call(s) excluded", process_note])
    perf.write(run_dir)
    return InferenceRun(output_dir=run_dir, outputs=writer.outputs, perf=perf)


class NpuProcess:
    """The ais_bench session's process (cgan.ascend.ais_bench_process): its outputs, in order."""

    SLOTS = 4  # outputs in flight, one call at a time: the NPU runs ahead of the caller by at most 4 calls
    PIPELINE_CALLS = 16  # calls per infer_pipeline; three times as many slots: one chunk computes while
    # the last one is put in the ring and the one before it is taken by the caller

    def __init__(self, device: int, om: Path, batch: int, warmup: int, slot_bytes: int,
                 pass_fds: tuple[int, ...] = (), chunk: int = 1):
        """Starts the process, which opens the session and runs the warm-up calls while the caller
        gets its inputs (feed). The ring is a memfd (anonymous shared memory, passed to the process
        as an open file): a ring in a file on disk had its dirty pages written back under it, and
        every slot written after a writeback faulted again (0.15 ms per output, measured)."""
        self.device = device
        slots = max(self.SLOTS, 3 * chunk)
        self.times: list[float] | None = None
        self.opened_s = self.waited_s = 0.0  # its start until the session was open; its waits for a free slot
        self._ring_fd = os.memfd_create("cgan-ais-bench-ring")  # closed in __exit__
        os.ftruncate(self._ring_fd, slots * slot_bytes)  # only the pages written are used
        self._ring = mmap.mmap(self._ring_fd, slots * slot_bytes)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen([sys.executable, "-m", "cgan.ascend.ais_bench_process"], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                      pass_fds=(*pass_fds, self._ring_fd))
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to, self._from = self._proc.stdin, self._proc.stdout
        config = {"parent": os.getpid(), "device": device, "om": str(om), "batch": batch, "warmup": warmup,
                  "slots": slots, "slot_bytes": slot_bytes, "ring_fd": self._ring_fd, "chunk": chunk}
        self._send(json.dumps(config))

    def feed(self, source: dict[str, object], count: int) -> None:
        """The run's inputs: {"bins": [path, ...]} (a file per grid) or {"pack": path} (`count`
        bins back to back)."""
        self._send(json.dumps({**source, "count": count}))

    def __enter__(self) -> NpuProcess:
        return self

    def __exit__(self, *exc) -> None:
        proc = self._proc
        if exc[0] is not None and proc.poll() is None:
            proc.kill()  # the caller failed: the NPU is not fed on
        for stream in (self._to, self._from):
            try:
                stream.close()
            except OSError:
                pass
        proc.wait()
        self._ring.close()
        os.close(self._ring_fd)

    def _send(self, line: str) -> None:
        try:
            self._to.write(line + "\n")
        except BrokenPipeError:  # it has exited: its last message, or its exit code, says why
            pass

    def outputs(self):
        """(first bin's index, output as float32, ms of the call) for each call, in order."""
        for line in self._from:
            message = json.loads(line)
            if "error" in message:
                raise AisBenchError(message["error"])
            if message.get("done"):
                times = message.get("times")
                self.times = None if times is None else [float(t) for t in times]
                self.opened_s, self.waited_s = float(message["opened_s"]), float(message["waited_s"])
                return
            if "slot" in message:
                slot, shape = int(message["slot"]), tuple(int(n) for n in message["shape"])
                view = np.frombuffer(self._ring, np.float32, int(np.prod(shape)), int(message["offset"]))
                y = view.reshape(shape).copy()  # the slot goes back to the NPU's process at once
                del view  # no export of the ring outlives this step (mmap.close refuses otherwise)
                self._send(str(slot))
                yield int(message["start"]), y, float(message["ms"])
        code = self._proc.wait()
        why = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        raise AisBenchError(f"ais_bench's NPU process on NPU {self.device} ended ({why}) before its last output; "
                            "what it printed is in the log above")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ais_bench")
    except PackageNotFoundError:
        return "unknown"
