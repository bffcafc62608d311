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
import os
import platform
import queue
import signal
import sys
import threading
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


def _write_all(fd: int, buffers: list, offset: int) -> None:
    """pwritev, resumed after a short write (a signal)."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        done = os.pwritev(fd, views, offset)
        offset += done
        while views and done >= len(views[0]):
            done -= len(views.pop(0))
        if done:
            views[0] = views[0][done:]


def main() -> int:
    started = time.perf_counter()
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol's channel, line by line
    os.dup2(2, 1)  # what aclruntime and ACL print goes to stderr: the task's log
    speaking = threading.Lock()  # the loop and the placer both write lines

    def send(text: str) -> None:
        with speaking:
            proto.write(text)

    def say(**message) -> None:
        send(json.dumps(message) + "\n")

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
    slots, slot_bytes, ring_fd = int(config["slots"]), int(config["slot_bytes"]), int(config["ring_fd"])
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
    opened = time.perf_counter() - started
    for _ in range(int(config["warmup"])):
        execute([np.zeros((batch, INPUT_DIM), dtype=np.float32)])
    line = sys.stdin.readline()  # the inputs: sent once the task has them (its pack may arrive during the opening)
    if not line:
        return 1  # the task's process is gone, or it failed before it had the inputs
    inputs = json.loads(line)
    chunk = int(config["chunk"])
    per_call, count = batch // SAMPLES_PER_GRID, int(inputs["count"])
    starts = list(range(0, count, per_call))
    bins, pack = inputs.get("bins"), inputs.get("pack")
    source = open(pack, "rb", buffering=0) if pack else None  # noqa: SIM115 - lives as long as the process
    xs = np.zeros((chunk, batch, INPUT_DIM), dtype=np.float32)  # a chunk's inputs, back to back as in the pack

    handoff: queue.Queue = queue.Queue(maxsize=1)  # one chunk's outputs, to the ring's thread
    placed: queue.Queue = queue.Queue()  # the slots they went into, back to the loop
    copying = threading.Semaphore(0)  # released as the copy begins: an execute begun before it would hold the
    # GIL and keep the copy from starting until the chunk ends

    def place() -> None:
        """Each chunk's outputs into free slots of the ring while the NPU computes the next chunk:
        one pwritev per run of adjacent slots, which leaves the GIL for the whole copy (the loop's
        infer_pipeline holds it). The loop announces them, so this thread needs the GIL only for
        a moment per chunk."""
        free = list(range(slots))
        try:
            while (item := handoff.get()) is not None:
                calls, ys, stride = item
                while len(free) < len(calls):  # the slots hold outputs the task has not taken yet
                    returned = sys.stdin.readline()
                    if not returned:
                        os._exit(1)  # the task's process is gone
                    free.append(int(returned))
                taken = [free.pop(0) for _ in calls]
                cuts = [i for i in range(1, len(taken)) if taken[i] != taken[i - 1] + 1]  # runs of adjacent slots
                copying.release()  # the loop's next execute may begin: this thread is about to leave the GIL
                for a, b in zip([0, *cuts], [*cuts, len(taken)], strict=True):
                    _write_all(ring_fd, ys[a:b], taken[a] * stride)
                placed.put(taken)
        except BaseException as exc:  # noqa: BLE001 - said to the task, whatever it was
            say(error=f"ais_bench's NPU process could not hand over outputs on NPU {device}: {exc!r}")
            os._exit(1)

    def announce(calls: list[int], shape: list[int], stride: int, ms: float) -> None:
        """The lines of a chunk in the ring, in one write: one wake-up of the task."""
        send("\n".join(json.dumps({"slot": slot, "offset": slot * stride, "start": start, "shape": shape, "ms": ms})
                       for slot, start in zip(placed.get(), calls, strict=True)) + "\n")

    placer = threading.Thread(target=place, name="ring", daemon=True)
    placer.start()
    waited = 0.0  # seconds the NPU idled because the ring was full: the task behind
    stride, last = 0, None  # every output of the om has one size; the chunk being put in the ring
    for first in range(0, len(starts), chunk):
        calls = starts[first : first + chunk]
        n = min(len(calls) * per_call, count - calls[0])  # sizes checked by the caller; a short read is refused
        if source is not None:  # the shard's pack: the chunk's bins are back to back at their offset
            try:
                read_pack_rows(source, calls[0], n, xs)
            except InputBinError as exc:
                say(error=str(exc))
                return 1
        else:
            into = xs.data.cast("B")
            for i, path in enumerate(bins[calls[0] : calls[0] + n]):
                with open(path, "rb", buffering=0) as bin_file:
                    got = bin_file.readinto(into[i * INPUT_BIN_BYTES : (i + 1) * INPUT_BIN_BYTES])
                if got != INPUT_BIN_BYTES:
                    say(error=f"input bin {path} has {got:,} bytes, not {INPUT_BIN_BYTES:,}: it changed "
                              "during the run")
                    return 1
        xs.reshape(-1, INPUT_DIM)[n * SAMPLES_PER_GRID :] = 0  # a short last call: padding rows, outputs dropped
        t0 = time.perf_counter()
        ys = execute(list(xs[: len(calls)]))
        ms = (time.perf_counter() - t0) * 1000.0 / len(calls)
        stride = stride or ys[0].nbytes
        for y in ys:
            if y.nbytes > slot_bytes:
                say(error=f"ais_bench returned {y.nbytes:,} bytes for one call, more than the {slot_bytes:,} of a "
                          f"[{batch}, 3, 28, 28] output: not the CGAN generator's om")
                return 1
            if y.nbytes != stride:
                say(error=f"ais_bench returned {y.nbytes:,} bytes for one call, not the {stride:,} of the calls "
                          "before: not the CGAN generator's static om")
                return 1
        w0 = time.perf_counter()
        handoff.put((calls, ys, stride))
        copying.acquire()  # until slots are free (the task is behind: the NPU idles) and the copy begins
        waited += time.perf_counter() - w0
        if last is not None:
            announce(*last)  # its copy ran during this chunk's execute (the thread says so before it takes the next)
        last = (calls, list(ys[0].shape), stride, ms)
    if last is not None:
        announce(*last)
    handoff.put(None)
    placer.join()
    from cgan.ascend.ais_bench import exec_times

    say(done=True, times=exec_times(session), opened_s=round(opened, 3), waited_s=round(waited, 3))
    # no finalize(): ACL ends with this process (aclruntime initialises it once per process)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
