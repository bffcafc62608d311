"""PostprocessOperator: grids, quality report and run-level perf for every shard of the run."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

from airflow.sdk import BaseOperator

from operators.artifact_store import DEFAULT_CONN_ID, fetch_checkpoint, open_artifact_store
from operators.failures import fail_fast_on_bad_input


class PostprocessOperator(BaseOperator):
    template_fields: Sequence[str] = ("workspace", "shards", "checkpoint", "parity_grids")
    ui_color = "#e6f4ea"

    def __init__(self, *, workspace: str, shards: list[dict], checkpoint: str, parity_grids: int = 32,
                 aws_conn_id: str = DEFAULT_CONN_ID, **kwargs):
        super().__init__(**kwargs)
        self.workspace = workspace
        self.shards = shards
        self.checkpoint = checkpoint
        self.parity_grids = parity_grids
        self.aws_conn_id = aws_conn_id

    @fail_fast_on_bad_input
    def execute(self, context) -> dict:
        from cgan.postprocess import postprocess_run

        store = open_artifact_store(self.workspace, self.aws_conn_id)
        with tempfile.TemporaryDirectory(prefix="cgan-post-ckpt-") as tmp:
            checkpoint = fetch_checkpoint(self.checkpoint, tmp, self.aws_conn_id)
            self.log.info("Postprocessing %d shard(s) in %s", len(self.shards), store.uri)
            summary = postprocess_run(store, self.shards, checkpoint, parity_grids=int(self.parity_grids),
                                      log=self.log.info)
        self.log.info(
            "Made %d grids; label accuracy %.4f; parity max abs error %.3g; %s %.1f grids/s (%.2f ms per call)",
            summary["grids"], summary["label_accuracy"], summary["parity_max_abs_err"], summary["backend"],
            summary["grids_per_s"], summary["latency_ms_mean"],
        )
        return summary
