"""STAND-IN of Huawei's aclruntime (the C++ backend of ais_bench), for tests only. No NPU runs.

THE TRICK: the "om" is an ONNX file (the stand-in atc copies the ONNX into the om), run with
ONNX Runtime on the CPU, so outputs are the model's true float32 values. The surface follows
backend/python/src/PyInferenceSession (InferenceSession(model, device, options), get_inputs,
get_outputs, run(names, tensors), sumary().exec_time_list in ms, reset_sumaryinfo, finalize),
session_options and BaseTensor(ptr, nbytes).

ACL lives once per process, as in the real backend (Ascend/tools ais-bench_workload/tool/ais_bench
backend, 2023-06): TensorContext is a process-wide singleton whose constructor calls aclInit once
(DeviceManager::InitDevices); a session's finalize() runs TensorContext::Finalize ->
DeviceManager::DestroyDevices -> aclFinalize, and nothing initialises ACL again (acl.h: "The
aclInit interface can be called only once in a process"). So after one session's finalize() a
second InferenceSession in the same process fails where it opens its device (SetContext ->
aclrtSetDevice on a finalized ACL): "[ERROR] acl open device N failed" on stdout and
RuntimeError(GetError(ret)), "[100001][ACL is not initialized] " (the code is inferred: ACL's
ACL_ERROR_UNINITIALIZE, named by the backend's own error table; unverified on a host). A session
dropped without finalize() (its destructor unloads the model, PyInferenceSession::Destroy)
leaves ACL up for the next one; ACL is finalized at process exit (~TensorContext).

Test controls (environment), shared with the stand-in msame:
  STANDIN_MSAME_DEVICES  ACL devices this "host" has (default 0..7): others -> RuntimeError;
                         with STANDIN_NPU_PHYSICAL and ASCEND_RT_VISIBLE_DEVICES as the stand-in
                         msame reads them (ACL renumbering; the detector keys on the host's id)
  STANDIN_NPU_STATE_DIR  per-host folder: the device is flocked from session to finalize, the
                         session's destruction or exit;
                         a second process on a busy device -> RuntimeError (a TEST DETECTOR of
                         double use, not ACL behaviour)
  STANDIN_NPU_USAGE_LOG  one JSON line per device use ({tool, host, device, pid, start, end});
                         host = STANDIN_NPU_HOST or the machine's hostname
  STANDIN_NPU_DELAY_S    seconds each execute takes besides computing (default 0)
  STANDIN_AIS_BENCH_TIMED_MS  a TIMED NPU for `make bench`: each execute lasts this many ms and
                         computes nothing (the first computes with ONNX Runtime; every later
                         output is a copy of it), so the host CPU is left to the task
  STANDIN_AIS_BENCH_CRASH=1  SIGSEGV in the first execute (a driver fault): the process dies at once
  Every wait holds the GIL, as the real run() does: pybind11 binds InferenceSession.run without
  a gil_scoped_release (backend/python/src/PyInferenceSession/PyInferenceSession.cpp at
  Ascend/tools 9d6da90), so no other thread of the process runs Python while the NPU computes.
  STANDIN_AIS_BENCH_FP16=1  the om's outputs are float16 (atc without --output_type=FP32): run()
                         returns float16 tensors, as aclruntime gives the om's output dtype

run_pipeline(names, inputs_list, shapes_list, auto_dym_shape, auto_dym_dims) follows
InferPipelineBaseTensor of later releases (PyInferenceSession.cpp and base/module/ModelInfer/
pipeline.cpp, 2023-2024, behind interface.py's infer_pipeline): the calling thread queues the
inputs, and threads of their own copy each input to the device, execute (one OnlyInfer after
another), copy each output back and collect it, so the NPU computes the calls back to back while
the copies of the neighbouring calls run; it returns every call's outputs, in order, as host
tensors, when the last is done, holding the GIL throughout (no gil_scoped_release there either).
The stand-in does the same on one thread: while call i "executes" (the timed wait, GIL held) it
checks call i+1's input and copies call i-1's output; call i+1 starts when the wait for call i
ends, so a call's start still pays the wake-up after the previous one, as the compute thread's
next OnlyInfer does. Without STANDIN_AIS_BENCH_TIMED_MS the calls run one after another through
run(). The 2023-06 interface has no infer_pipeline: STANDIN_AIS_BENCH_NO_PIPELINE=1 (interface.py).
"""

import atexit
import ctypes
import ctypes.util
import fcntl
import json
import os
import signal
import socket
import sys
import time
import weakref

import numpy as np

_ACL = {"state": "none"}  # none -> initialised (first session) -> finalized (a finalize()): never again
_LIVE = weakref.WeakSet()  # sessions holding a device, released at exit (~TensorContext)


@atexit.register
def _process_exit():
    for session in list(_LIVE):
        session._release()


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_LIBC = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6")  # PyDLL: the GIL stays held
_LIBC.clock_nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Timespec), ctypes.c_void_p]
_CLOCK_MONOTONIC, _TIMER_ABSTIME = 1, 1


def _wait_holding_gil(seconds):
    """Wait `seconds` without releasing the GIL, as a C++ call that blocks on the device with the
    GIL held: clock_nanosleep to an absolute CLOCK_MONOTONIC deadline through ctypes.PyDLL (no
    CPU), waking 0.1 ms early (Linux timer slack and wake-up latency) and spinning to the
    deadline, so a call lasts what the NPU would take and not more."""
    deadline = time.clock_gettime(time.CLOCK_MONOTONIC) + seconds
    early = deadline - 0.0001
    if early > time.clock_gettime(time.CLOCK_MONOTONIC):
        spec = _Timespec(int(early), int((early % 1) * 1e9))
        while _LIBC.clock_nanosleep(_CLOCK_MONOTONIC, _TIMER_ABSTIME, ctypes.byref(spec), None) == 4:  # EINTR
            pass
    while time.clock_gettime(time.CLOCK_MONOTONIC) < deadline:
        pass


def _acl_devices(env) -> dict[int, int]:
    """{ACL id: the host's id}: STANDIN_MSAME_DEVICES, STANDIN_NPU_PHYSICAL, ASCEND_RT_VISIBLE_DEVICES."""
    base = [int(d) for d in env.get("STANDIN_MSAME_DEVICES", "0,1,2,3,4,5,6,7").split(",")]
    phys = [int(d) for d in env.get("STANDIN_NPU_PHYSICAL", "").split(",") if d.strip()] or base
    physical = dict(zip(base, phys, strict=False))
    rt = [int(d) for d in env.get("ASCEND_RT_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return {i: physical[v] for i, v in enumerate(rt) if v in physical} if rt else physical


class session_options:  # noqa: N801 (the real class's name)
    def __init__(self):
        self.loop = 1
        self.log_level = 2
        self.acl_json_path = ""


class BaseTensor:
    def __init__(self, ptr, size):
        self.data = bytes((ctypes.c_char * size).from_address(ptr))


class Tensor:
    def __init__(self, array):
        self._array = np.asarray(array)
        self.on_host = False

    def to_host(self):
        self.on_host = True

    def to_device(self, device):
        self.on_host = False

    @property
    def shape(self):
        return list(self._array.shape)

    def __array__(self, dtype=None, copy=None):
        if not self.on_host:
            raise RuntimeError("tensor is on the device: call to_host() first")
        return self._array if dtype is None else self._array.astype(dtype)


class _Info:
    def __init__(self):
        self.exec_time_list = []


class _Meta:
    def __init__(self, name, shape):
        self.name, self.shape = name, list(shape)


class InferenceSession:
    def __init__(self, model_path, device_id, options):
        self._fd = None
        if _ACL["state"] == "finalized":  # SetContext -> aclrtSetDevice after aclFinalize
            print(f"[ERROR] acl open device {device_id} failed", flush=True)
            raise RuntimeError("[100001][ACL is not initialized] ")
        _ACL["state"] = "initialised"
        devices = _acl_devices(os.environ)  # ACL id -> the host's id, as the stand-in msame
        if device_id not in devices:
            raise RuntimeError(f"[ERROR] acl open device {device_id} failed, runtime result = 107001 "
                               "(device id error)")
        if not os.path.isfile(model_path):
            raise RuntimeError(f"[ERROR] load model from file failed, model file is {model_path}")
        self.device_id, self.options, self._start = device_id, options, time.time()
        self._physical = devices[device_id]
        self._fd = self._hold(devices[device_id])
        _LIVE.add(self)
        import onnxruntime as ort

        try:
            self._ort = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        except Exception as exc:
            self._release()
            raise RuntimeError(f"[ERROR] load model from file failed: {exc}") from None
        self._info = _Info()
        self._timed = []  # STANDIN_AIS_BENCH_TIMED_MS: the one computed output, copied for later calls

    def _hold(self, device):
        state = os.environ.get("STANDIN_NPU_STATE_DIR")
        if not state:
            return None
        os.makedirs(state, exist_ok=True)
        fd = os.open(os.path.join(state, f"device{device}.busy"), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RuntimeError(f"[ERROR] [stand-in detector] device {device} is in use by another process: "
                               "two NPU tasks were given one device") from None
        return fd

    def get_inputs(self):
        return [_Meta(i.name, i.shape) for i in self._ort.get_inputs()]

    def get_outputs(self):
        return [_Meta(o.name, o.shape) for o in self._ort.get_outputs()]

    def run(self, names, inputs):
        called = time.perf_counter()  # TIMED: the whole call lasts the NPU's time
        meta = self._ort.get_inputs()
        if len(inputs) != len(meta):
            raise RuntimeError(f"[ERROR] input count {len(inputs)} does not match the model's {len(meta)}")
        feeds = {}
        for m, tensor in zip(meta, inputs, strict=True):
            need = int(np.prod(m.shape)) * 4
            if len(tensor.data) != need:
                raise RuntimeError(f"[ERROR] arg0 tensorsize: {need} filesize: {len(tensor.data)} not match")
            feeds[m.name] = np.frombuffer(tensor.data, "<f4").reshape(m.shape)
        result = None
        timed_s = float(os.environ.get("STANDIN_AIS_BENCH_TIMED_MS") or 0) / 1000.0
        if os.environ.get("STANDIN_AIS_BENCH_CRASH") == "1":
            os.kill(os.getpid(), signal.SIGSEGV)
        for _ in range(max(1, self.options.loop)):
            t0 = time.perf_counter()
            _wait_holding_gil(float(os.environ.get("STANDIN_NPU_DELAY_S") or 0))
            if timed_s and self._timed:
                _wait_holding_gil(timed_s - (time.perf_counter() - min(t0, called)))
                called = float("inf")  # loop > 1: each further execute from its own start
                result = [r.copy() for r in self._timed]
            else:
                result = self._ort.run(names, feeds)
                if timed_s:
                    self._timed = [r.copy() for r in result]
            if os.environ.get("STANDIN_AIS_BENCH_FP16") == "1":  # the om's outputs are float16
                result = [r.astype(np.float16) for r in result]
            self._info.exec_time_list.append((time.perf_counter() - t0) * 1000.0)
        return [Tensor(r) for r in result]

    def run_pipeline(self, names, inputs_list, shapes_list, auto_dym_shape=False, auto_dym_dims=False):
        if len(inputs_list) != len(shapes_list):
            raise RuntimeError("input list len not equal to shapes list len")
        timed_s = float(os.environ.get("STANDIN_AIS_BENCH_TIMED_MS") or 0) / 1000.0
        if not timed_s or not self._timed or self.options.loop != 1:
            results = [self.run(names, inputs) for inputs in inputs_list]  # the first call computes
            for outputs in results:
                for tensor in outputs:
                    tensor.to_host()  # FuncD2h: TensorToHost
            return results
        switch = sys.getswitchinterval()
        sys.setswitchinterval(3600.0)  # the whole call holds the GIL, as the binding does: no
        try:  # other thread of the process runs Python between two executes either
            return self._timed_pipeline(inputs_list, timed_s)
        finally:
            sys.setswitchinterval(switch)

    def _timed_pipeline(self, inputs_list, timed_s):
        meta = self._ort.get_inputs()
        fp16 = os.environ.get("STANDIN_AIS_BENCH_FP16") == "1"
        delay = float(os.environ.get("STANDIN_NPU_DELAY_S") or 0)
        host = [r.astype(np.float16) if fp16 else r for r in self._timed]
        results, previous = [], None  # previous: when the call now executing started
        for inputs in [*inputs_list, None]:
            if inputs is not None:  # H2D of this call, while the previous one executes
                for m, tensor in zip(meta, inputs, strict=True):
                    need = int(np.prod(m.shape)) * 4
                    if len(tensor.data) != need:
                        raise RuntimeError(f"[ERROR] arg0 tensorsize: {need} filesize: {len(tensor.data)} not match")
            if previous is not None:  # the compute thread waits for its execute to end
                _wait_holding_gil(timed_s + delay - (time.perf_counter() - previous))
                self._info.exec_time_list.append((time.perf_counter() - previous) * 1000.0)
            started = time.perf_counter() if inputs is not None else None  # this call's execute begins
            if previous is not None:  # D2H of the previous call, while this one executes
                outputs = [Tensor(np.frombuffer(bytes(r.data), r.dtype).reshape(r.shape))  # copies holding the
                           for r in host]  # GIL (numpy's own copies let other threads run)
                for tensor in outputs:
                    tensor.to_host()
                results.append(outputs)
            previous = started
        return results

    def sumary(self):
        return self._info

    def reset_sumaryinfo(self):
        self._info = _Info()

    def finalize(self):
        """PyInferenceSession::Finalize: Destroy(), then aclFinalize for the whole process."""
        self._release()
        _ACL["state"] = "finalized"

    def __del__(self):  # ~PyInferenceSession: Destroy() (the model unloaded); ACL stays up
        self._release()

    def _release(self):
        _LIVE.discard(self)
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is None:
            return
        if os.environ.get("STANDIN_NPU_USAGE_LOG"):
            with open(os.environ["STANDIN_NPU_USAGE_LOG"], "a") as fh:
                host = os.environ.get("STANDIN_NPU_HOST") or socket.gethostname()
                fh.write(json.dumps({"tool": "ais_bench", "host": host, "device": self._physical,
                                     "pid": os.getpid(), "start": self._start, "end": time.time()}) + "\n")
        os.close(fd)
