"""STAND-IN of ais_bench.infer.interface (tests only), after Ascend/tools
ais-bench_workload/tool/ais_bench/ais_bench/infer/interface.py: the same InferSession surface
(constructor, get_inputs/get_outputs, run, infer, sumary/reset_sumaryinfo, finalize) over the
stand-in aclruntime, which computes with ONNX Runtime. Newer releases renamed sumary() to
summary(): STANDIN_AIS_BENCH_SUMMARY=summary gives that spelling (and no sumary). Later releases
add infer_pipeline(feeds_list) (many calls in one, aclruntime's run_pipeline: see the stand-in
aclruntime); STANDIN_AIS_BENCH_NO_PIPELINE=1 gives the 2023-06 interface, which has none."""

import os

import aclruntime  # the real interface imports it first too: missing -> ModuleNotFoundError
import numpy as np


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str = None, debug: bool = False,
                 loop: int = 1):
        self.device_id = device_id
        self.model_path = model_path
        self.loop = loop
        options = aclruntime.session_options()
        if acl_json_path is not None:
            options.acl_json_path = acl_json_path
        options.log_level = 1 if debug else 2
        options.loop = self.loop
        self.session = aclruntime.InferenceSession(self.model_path, self.device_id, options)
        self.outputs_names = [meta.name for meta in self.session.get_outputs()]

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, feeds, out_array=False):
        if len(feeds) > 0 and isinstance(feeds[0], np.ndarray):
            inputs = [aclruntime.BaseTensor(a.__array_interface__["data"][0], a.nbytes) for a in feeds]
        else:
            inputs = feeds
        outputs = self.session.run(self.outputs_names, inputs)
        if out_array:
            for tensor in outputs:
                tensor.to_host()
            return [np.array(tensor) for tensor in outputs]
        return outputs

    def reset_sumaryinfo(self):
        self.session.reset_sumaryinfo()

    def finalize(self):
        if hasattr(self.session, "finalize"):
            self.session.finalize()

    def infer(self, feeds, mode="static", custom_sizes=100000):
        inputs = []
        for feed in feeds:
            if type(feed) is np.ndarray:
                inputs.append(feed)
            else:
                raise RuntimeError(f"type:{type(feed)} invalid")
        return self.run(inputs, out_array=True)


def _infer_pipeline(self, feeds_list, mode="static", custom_sizes=100000):
    """Later releases' InferSession.infer_pipeline: one list of ndarrays per call in, one list of
    output arrays per call out, in order (aclruntime's run_pipeline)."""
    inputs_list, shapes_list = [], []
    for feeds in feeds_list:
        inputs, shapes = [], []
        for feed in feeds:
            if type(feed) is not np.ndarray:
                raise RuntimeError(f"type:{type(feed)} invalid")
            feed = feed if feed.flags.c_contiguous else np.ascontiguousarray(feed)
            inputs.append(aclruntime.BaseTensor(feed.__array_interface__["data"][0], feed.nbytes))
            shapes.append(feed.shape)
        inputs_list.append(inputs)
        shapes_list.append(shapes)
    if mode != "static":
        raise RuntimeError(f"the stand-in runs static models only, not {mode!r}")
    outputs = self.session.run_pipeline(self.outputs_names, inputs_list, shapes_list, False, False)
    return [[np.array(tensor) for tensor in call] for call in outputs]


if os.environ.get("STANDIN_AIS_BENCH_NO_PIPELINE") != "1":
    InferSession.infer_pipeline = _infer_pipeline


def _sumary(self):
    return self.session.sumary()


if os.environ.get("STANDIN_AIS_BENCH_SUMMARY") == "summary":
    InferSession.summary = _sumary
else:
    InferSession.sumary = _sumary
