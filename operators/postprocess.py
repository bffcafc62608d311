"""PostprocessOperator: quality report and run-level perf from what the inference tasks handed over."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

from operators.base import CganBaseOperator


class PostprocessOperator(CganBaseOperator):
    """Merge the shards' tallies, check parity with PyTorch on the plan's sample, pool the perf.

    :param workspace: the run's workspace URI (see CganBaseOperator)
    :param shards: the run's shard plan (cgan.run_params.plan_shards), with each shard's parity sample
    :param checkpoint: the generator the outputs were made from (the parity reference)
    :param aws_conn_id: Airflow connection for s3:// stores and checkpoints
    """

    template_fields: Sequence[str] = (*CganBaseOperator.template_fields, "shards", "checkpoint")
    ui_color = "#e6f4ea"

    def __init__(self, *, shards: list[dict], checkpoint: str, **kwargs):
        super().__init__(**kwargs)
        self.shards = shards
        self.checkpoint = checkpoint

    def execute(self, context) -> dict:
        from cgan.postprocess import postprocess_run

        with tempfile.TemporaryDirectory(prefix="cgan-post-ckpt-") as tmp:
            checkpoint = self.local_checkpoint(self.checkpoint, tmp)
            self.log.info("Postprocessing %d shard(s) in %s", len(self.shards), self.store.uri)
            summary = postprocess_run(self.store, self.shards, checkpoint, log=self.log.info)
        self.log.info(
            "Made %d grids; label accuracy %.4f; parity max abs error %.3g; %s %.1f grids/s (%.2f ms per call)",
            summary["grids"], summary["label_accuracy"], summary["parity_max_abs_err"], summary["backend"],
            summary["grids_per_s"], summary["latency_ms_mean"],
        )
        return summary
