"""The NPU loop of an ais_bench run, in a process of its own (started by cgan.ascend.ais_bench).

aclruntime's `run()` holds the GIL while the NPU computes (pybind11 binds it without a
gil_scoped_release), so no thread of the process that calls it runs Python meanwhile: a task
that rendered its grids in threads beside the session would leave its NPU idle for every grid
it renders. This process only feeds the NPU: it reads the bins, calls ais_bench and puts each
output, as float32, in a slot of a ring (a memfd) shared with the task's process, which renders.
Where the installed ais_bench has `infer_pipeline` (releases after 2023-06), `chunk` calls go in
one: aclruntime's run_pipeline copies the next call's input and the last call's output on threads
of its own while the NPU computes, so the calls of a chunk reach the NPU back to back; older
releases get one `session.infer` per call. The protocol (JSON lines, the ring): docs/ascend.md,
"ais_bench's NPU process".

    python -m cgan.ascend.ais_bench_process     # config on stdin; never by hand
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import platform
import signal
import sys
import time

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the task's process dies (Linux prctl), so an NPU is never fed
    by an orphan after its lease ended."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's EOF still stops the loop
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class _SchedAttr(ctypes.Structure):  # struct sched_attr (include/uapi/linux/sched/types.h)
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64)]


SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}  # the syscall's number on the workers' architectures
SLICE_NS = 100_000  # EEVDF's shortest request (the kernel clamps to 0.1..100 ms)


def _short_slice() -> bool:
    """Ask the scheduler for 0.1 ms slices (sched_setattr, SCHED_OTHER at this process's nice:
    no privilege, no priority change). Linux 6.12+ (EEVDF) lets a task with a shorter slice
    preempt a longer one when it wakes, so each wake-up after an execute, on cores the task's
    renderers keep busy, starts the next call sooner; threads and processes started from here
    (aclruntime's pipeline threads) inherit it. Older kernels ignore it; a refusal changes nothing."""
    number = SCHED_SETATTR.get(platform.machine())
    if number is None:
        return False
    attr = _SchedAttr(ctypes.sizeof(_SchedAttr), 0, 0, os.getpriority(os.PRIO_PROCESS, 0), 0, SLICE_NS, 0, 0)
    try:
        return ctypes.CDLL(None, use_errno=True).syscall(number, 0, ctypes.byref(attr), 0) == 0
    except (OSError, AttributeError):
        return False


def main() -> int:
    started = time.perf_counter()
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol's channel, line by line
    os.dup2(2, 1)  # what aclruntime and ACL print goes to stderr: the task's log

    def say(**message) -> None:
        proto.write(json.dumps(message) + "\n")

    config = json.loads(sys.stdin.readline())
    _die_with_parent(int(config["parent"]))
    _short_slice()
    import numpy as np

    from cgan.ascend.ais_bench import load_session_class
    from cgan.ascend.errors import AscendError
    from cgan.errors import InputBinError
    from cgan.layout.tensors import INPUT_BIN_BYTES, INPUT_DIM, SAMPLES_PER_GRID
    from cgan.runtimes.folder_runner import read_pack_rows

    device, om, batch = int(config["device"]), config["om"], int(config["batch"])
    slots, slot_bytes = int(config["slots"]), int(config["slot_bytes"])
    try:
        session = load_session_class()(device, om, loop=1)
    except AscendError as exc:
        say(error=str(exc))
        return 1
    except RuntimeError as exc:  # aclruntime: bad device id, model load failure
        say(error=f"ais_bench could not open NPU {device} with {os.path.basename(om)}: {exc}")
        return 1

    def execute(xs: list) -> list:
        """One output per input, float32 (float16 outputs are exact in float32); several inputs go
        in one infer_pipeline (the caller sends several only where ais_bench has it)."""
        try:
            if len(xs) > 1:
                ys = [call[0] for call in session.infer_pipeline([[x] for x in xs])]
            else:
                ys = [session.infer(xs)[0]]
        except RuntimeError as exc:  # aclruntime: input size mismatch, execute failure
            say(error=f"ais_bench execute on NPU {device} failed: {exc}")
            raise SystemExit(1) from None
        return [np.ascontiguousarray(y, dtype=np.float32) for y in ys]

    say(ready=True)
    waited = 0.0  # seconds with too few free slots: the NPU idle because the caller is behind
    opened = time.perf_counter() - started
    for _ in range(int(config["warmup"])):
        execute([np.zeros((batch, INPUT_DIM), dtype=np.float32)])
    chunk = int(config["chunk"])
    per_call, count = batch // SAMPLES_PER_GRID, int(config["count"])
    starts = list(range(0, count, per_call))
    bins, pack = config.get("bins"), config.get("pack")
    source = open(pack, "rb", buffering=0) if pack else None  # noqa: SIM115 - lives as long as the process
    free = list(range(slots))
    xs = [np.zeros((batch, INPUT_DIM), dtype=np.float32) for _ in range(chunk)]
    rows = [x.data.cast("B") for x in xs]  # each call's input, filled straight from the bins' bytes
    with mmap.mmap(int(config["ring_fd"]), slots * slot_bytes) as ring:  # the task's memfd
        for first in range(0, len(starts), chunk):
            calls = starts[first : first + chunk]
            for x, into, start in zip(xs, rows, calls, strict=False):
                n = min(per_call, count - start)  # sizes checked by the caller; a short read is refused here
                if source is not None:  # the shard's pack: this call's bins are back to back at their offset
                    try:
                        read_pack_rows(source, start, n, x)
                    except InputBinError as exc:
                        say(error=str(exc))
                        return 1
                else:
                    for i, path in enumerate(bins[start : start + n]):
                        with open(path, "rb", buffering=0) as bin_file:
                            got = bin_file.readinto(into[i * INPUT_BIN_BYTES : (i + 1) * INPUT_BIN_BYTES])
                        if got != INPUT_BIN_BYTES:
                            say(error=f"input bin {path} has {got:,} bytes, not {INPUT_BIN_BYTES:,}: it changed "
                                      "during the run")
                            return 1
                if n < per_call:
                    x[n * SAMPLES_PER_GRID :] = 0  # a short last call: padding rows, outputs dropped
            w0 = time.perf_counter()
            while len(free) < len(calls):  # the slots hold outputs the task has not taken yet
                line = sys.stdin.readline()
                if not line:
                    return 1  # the task's process is gone
                free.append(int(line))
            waited += time.perf_counter() - w0
            t0 = time.perf_counter()
            ys = execute(xs[: len(calls)])
            ms = (time.perf_counter() - t0) * 1000.0 / len(calls)
            placed = []
            for start, y in zip(calls, ys, strict=True):
                if y.nbytes > slot_bytes:
                    say(error=f"ais_bench returned {y.nbytes:,} bytes for one call, more than the "
                              f"{slot_bytes:,} of a [{batch}, 3, 28, 28] output: not the CGAN generator's om")
                    return 1
                slot = free.pop(0)
                ring[slot * slot_bytes : slot * slot_bytes + y.nbytes] = y.data.cast("B")
                placed.append(json.dumps({"slot": slot, "start": start, "shape": list(y.shape), "ms": ms}))
            proto.write("\n".join(placed) + "\n")  # the chunk's lines in one write: one wake-up of the task
    from cgan.ascend.ais_bench import exec_times

    say(done=True, times=exec_times(session), opened_s=round(opened, 3), waited_s=round(waited, 3))
    # no finalize(): ACL ends with this process (aclruntime initialises it once per process)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
