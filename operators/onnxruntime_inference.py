"""OnnxRuntimeInferenceOperator: one shard through ONNX Runtime on the CPU (the `cpu` target).

Mapped over the run's shards. Each grid's PNG and label check are made on a second thread while
ONNX Runtime computes the next one (cgan.run.shard_render); only the raw outputs it hands over are
written to its temp folder; given the publish `bucket` and the run's
`run_prefix`, each PNG goes straight to the publish bucket under this try's own attempt
(cgan.run.staging: staged, not yet published; the manifest still comes last), else into the
workspace. Then the shard hands over perf.json, only the raw outputs of the run's parity sample
(all with keep_raw_outputs) and render.json last (with where its PNGs were staged), to
`outputs/shard_NNNN/` (cgan.layout.workspace). That prefix is emptied first, so a
retry never mixes its outputs with an earlier try's. The other raw outputs never leave the worker.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from operators.base import CganBaseOperator


class OnnxRuntimeInferenceOperator(CganBaseOperator):
    """Run ONNX Runtime over one shard of the plan, rendering its grids as it goes.

    :param workspace: the run's workspace URI (see CganBaseOperator)
    :param shard: the mapped argument, a shard of the plan (cgan.run.plan.plan_shards): shard,
        start, count, bins_prefix, parity, keep_raw_outputs
    :param onnx_uri: the exported ONNX (the export task's XCom `onnx_uri`)
    :param threads: ONNX Runtime intra-op threads (0 = all cores)
    :param precision: fp32, or int8 (cgan.runtimes.ort_int8: static quantization, built once per
        model and cached on the worker)
    :param bucket: the publish bucket (CGAN_PUBLISH_BUCKET) to stage the grid PNGs in as they are
        rendered; None: the PNGs go into the workspace (as for the `cgan` command line)
    :param run_prefix: the run's prefix in that bucket, `runs/<run key>` (the plan's `run_prefix`)
    :param aws_conn_id: Airflow connection for s3:// stores and the publish bucket
    """

    template_fields: Sequence[str] = (*CganBaseOperator.template_fields, "shard", "onnx_uri", "threads",
                                      "precision", "bucket", "run_prefix")
    ui_color = "#fef7e0"

    def __init__(self, *, shard: dict, onnx_uri: str, threads: int = 1, precision: str = "fp32",
                 bucket: str | None = None, run_prefix: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.bucket = bucket
        self.run_prefix = run_prefix
        self.shard = shard
        self.onnx_uri = onnx_uri
        self.threads = threads
        self.precision = precision  # fp32 or int8 (cgan.runtimes.ort_int8, cached per worker)

    def execute(self, context) -> dict:
        from cgan import settings
        from cgan.run.inference import run_shard
        from cgan.run.shard import Shard
        from cgan.runtimes.onnxruntime_runner import run_onnxruntime
        from operators.artifact_store import open_pack_stager

        shard = Shard.from_xcom(self.shard)
        split_deconv = settings.ort_split_deconv()
        with tempfile.TemporaryDirectory(prefix="cgan-ort-") as tmp_dir:
            tmp = Path(tmp_dir)
            model = self.fetch(self.onnx_uri, tmp / "cgan.onnx")

            def onnxruntime(bins, out: Path, on_output):  # bins: the shard's BinsPack, read in place
                return run_onnxruntime(model, bins, out, threads=int(self.threads), progress=self._progress,
                                       precision=self.precision, on_output=on_output, write_stems=shard.handed_stems,
                                       split_deconv=split_deconv), []

            self.log.info("Shard %d through ONNX Runtime, %s thread(s), %s", shard.index, self.threads, self.precision)
            result = run_shard(self.store, shard, tmp, onnxruntime, log=self.log.info, bins_pack=True,
                               stager=open_pack_stager(self.bucket, self.run_prefix, self.aws_conn_id))
        perf = result.perf
        self.log.info("Shard %d done: %.2f ms per call (p99 %.2f), %.1f grids/s; %d grid PNG(s) rendered during "
                      "inference, %d raw output(s) kept; CPU s %s; peak memory %s MiB", shard.index,
                      perf.latency_ms["mean"], perf.latency_ms["p99"], perf.grids_per_s, result.tally["grids"],
                      result.raw_outputs_kept, result.cpu_s, result.peak_rss_mb)
        return {**result.as_xcom(), "cpu_s": result.cpu_s, "peak_rss_mb": result.peak_rss_mb}

    def _progress(self, done: int, total: int) -> None:
        from cgan.progress import is_tenth

        if is_tenth(done, total):
            self.log.info("infer %d/%d", done, total)
