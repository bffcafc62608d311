"""InputBinsOperator: the run's seeded input bins, shard by shard, into `bins/shard_NNNN/`."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from airflow.sdk import BaseOperator

from operators.artifact_store import DEFAULT_CONN_ID, open_artifact_store
from operators.failures import fail_fast_on_bad_input


class InputBinsOperator(BaseOperator):
    template_fields: Sequence[str] = ("workspace", "shards", "seed")
    ui_color = "#e8f0fe"

    def __init__(self, *, workspace: str, shards: list[dict], seed: int,
                 aws_conn_id: str = DEFAULT_CONN_ID, **kwargs):
        super().__init__(**kwargs)
        self.workspace = workspace
        self.shards = shards
        self.seed = seed
        self.aws_conn_id = aws_conn_id

    @fail_fast_on_bad_input
    def execute(self, context) -> dict:
        from cgan.bins import write_bins, write_dataset_info
        from cgan.store import upload_dir

        store = open_artifact_store(self.workspace, self.aws_conn_id)
        total = sum(s["count"] for s in self.shards)
        self.log.info("Writing %d input bins (seed %d) in %d shard(s) to %s", total, self.seed,
                      len(self.shards), store.uri)
        done = 0
        with tempfile.TemporaryDirectory(prefix="cgan-bins-") as tmp:
            for shard in self.shards:
                local = Path(tmp) / shard["bins_prefix"]
                store.delete_prefix(shard["bins_prefix"])
                write_bins(local, shard["count"], int(self.seed), start=shard["start"])
                write_dataset_info(local)
                upload_dir(store, local, shard["bins_prefix"])
                shutil.rmtree(local)
                done += shard["count"]
                self.log.info("bins %d/%d", done, total)
        return {"bins": done, "seed": int(self.seed)}
