"""OnnxRuntimeInferenceOperator: one shard through ONNX Runtime on the CPU (the `cpu` target).

Mapped over the run's shards. Outputs, perf.json and a log go to `outputs/shard_NNNN/`; that
prefix is emptied first, so a retry never mixes its outputs with an earlier try's. With
`render_grids` (the default) each grid's PNG and label check are made on a second thread while
ONNX Runtime computes the next one (cgan.shard_render); `render.json`, written last, lets
postprocess skip the shard.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from airflow.sdk import BaseOperator

from operators.failures import fail_fast_on_bad_input
from operators.artifact_store import DEFAULT_CONN_ID, open_artifact_store


class OnnxRuntimeInferenceOperator(BaseOperator):
    template_fields: Sequence[str] = ("workspace", "shard", "onnx_key", "threads", "precision")
    ui_color = "#fef7e0"

    def __init__(self, *, workspace: str, shard: dict, onnx_key: str = "model/cgan.onnx",
                 threads: int = 1, render_grids: bool = True, aws_conn_id: str = DEFAULT_CONN_ID,
                 precision: str = "fp32", **kwargs):
        super().__init__(**kwargs)
        self.workspace = workspace
        self.shard = shard
        self.onnx_key = onnx_key
        self.threads = threads
        self.precision = precision  # fp32 or int8 (cgan.runtimes.ort_int8, cached per worker)
        self.render_grids = render_grids
        self.aws_conn_id = aws_conn_id

    @fail_fast_on_bad_input
    def execute(self, context) -> dict:
        from cgan.postprocess import outputs_prefix
        from cgan.runtimes.onnxruntime_runner import run_onnxruntime
        from cgan.shard_render import RENDER_NAME, ShardRenderer
        from cgan.store import download_keys, upload_dir

        store = open_artifact_store(self.workspace, self.aws_conn_id)
        shard, prefix = self.shard, outputs_prefix(self.shard)
        with tempfile.TemporaryDirectory(prefix="cgan-ort-") as tmp:
            tmp = Path(tmp)
            model = store.get_file(self.onnx_key, tmp / "cgan.onnx")
            bins = [k for k in store.list(shard["bins_prefix"]) if k.endswith(".bin")]
            download_keys(store, bins, tmp / "bins")
            self.log.info("Shard %d: %d grid(s) through ONNX Runtime, %s thread(s), %s", shard["shard"],
                          len(bins), self.threads, self.precision)
            renderer = ShardRenderer(store) if self.render_grids else None
            try:
                store.delete_prefix(prefix)  # no render.json of an earlier try survives this one
                run = run_onnxruntime(model, tmp / "bins", tmp / "out", threads=int(self.threads),
                                      progress=self._progress, precision=self.precision,
                                      on_output=renderer.submit if renderer else None)
                tally = renderer.finish() if renderer else None
            finally:
                if renderer:
                    renderer.close()
            upload_dir(store, run.output_dir, prefix, "*_output_0.bin")
            store.put_file(run.output_dir / "perf.json", f"{prefix}/perf.json")
            if tally is not None:
                store.put_bytes(json.dumps(tally).encode(), f"{prefix}/{RENDER_NAME}")
                self.log.info("Shard %d: %d grid PNG(s) rendered and judged during inference",
                              shard["shard"], tally["grids"])
        perf = run.perf
        self.log.info("Shard %d done: %.2f ms per call (p99 %.2f), %.1f grids/s", shard["shard"],
                      perf.latency_ms["mean"], perf.latency_ms["p99"], perf.grids_per_s)
        return {"shard": shard["shard"], "outputs_prefix": prefix, "grids": perf.grids,
                "grids_per_s": perf.grids_per_s}

    def _progress(self, done: int, total: int) -> None:
        from cgan.progress import is_tenth

        if is_tenth(done, total):
            self.log.info("infer %d/%d", done, total)
