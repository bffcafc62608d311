"""PostprocessOperator: quality report and run-level perf from what the inference tasks handed over."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

from operators.base import CganBaseOperator


class PostprocessOperator(CganBaseOperator):
    """Merge the shards' tallies, check parity with PyTorch on the plan's sample, pool the perf.

    :param workspace: the run's workspace URI (see CganBaseOperator)
    :param shards: the run's shard plan (cgan.run.plan.plan_shards), with each shard's parity sample
    :param checkpoint: the generator the outputs were made from (the parity reference)
    :param run_params: the run's checked params: target, precision_mode and gate_* thresholds
        of the quality gate (defaults: CGAN_GATE_*, cgan.settings)
    :param aws_conn_id: Airflow connection for s3:// stores and checkpoints
    """

    template_fields: Sequence[str] = (*CganBaseOperator.template_fields, "shards", "checkpoint", "run_params")
    ui_color = "#e6f4ea"

    def __init__(self, *, shards: list[dict], checkpoint: str, run_params: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.run_params = run_params
        self.shards = shards
        self.checkpoint = checkpoint

    def execute(self, context) -> dict:
        from cgan.quality.gate import thresholds
        from cgan.recipe.perf import peak_rss_mb
        from cgan.run.postprocess import postprocess_run
        from cgan.run.shard import Shard
        from cgan.settings import gate_thresholds

        run_params = self.run_params or {}
        limits = thresholds(gate_thresholds(), run_params)
        with tempfile.TemporaryDirectory(prefix="cgan-post-ckpt-") as tmp:
            checkpoint = self.local_checkpoint(self.checkpoint, tmp)
            self.log.info("Postprocessing %d shard(s) in %s", len(self.shards), self.store.uri)
            shards = [Shard.from_xcom(s) for s in self.shards]
            summary = postprocess_run(self.store, shards, checkpoint, log=self.log.info,
                                      target=run_params.get("target", "cpu"),
                                      precision_mode=run_params.get("precision_mode", "force_fp16"), limits=limits)
        self.log.info(
            "Made %d grids; label accuracy %.4f; parity max abs error %.3g; %s %.1f grids/s (%.2f ms per call)",
            summary["grids"], summary["label_accuracy"], summary["parity_max_abs_err"], summary["backend"],
            summary["grids_per_s"], summary["latency_ms_mean"],
        )
        if summary["gate"] == "rejected":
            self.log.warning("Quality gate: rejected (%s); the run is published for inspection only and the "
                             "quality_gate task fails", "; ".join(summary["gate_failures"]))
        # + this task process's peak memory (VmHWM) for make bench; publish leaves it out of the manifest
        return {**summary, "peak_rss_mb": peak_rss_mb()}
