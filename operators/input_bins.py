"""InputBinsOperator: the run's seeded input bins, shard by shard, into the workspace's
`bins/shard_NNNN/` (cgan.layout.workspace) as one pack per shard (the bins back to back: one object,
not one per grid; cgan.run.shard_inputs splits it on the worker), each shard's prefix emptied first."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from operators.base import CganBaseOperator


class InputBinsOperator(CganBaseOperator):
    """Write one seeded input bin per grid, packed per shard (the recipe's CGAN_prep_bin.info, which
    lists local paths, is for `cgan bins` on a host, not for the workspace).

    :param workspace: the run's workspace URI (see CganBaseOperator)
    :param shards: the run's shard plan (cgan.run.plan.plan_shards): start, count, bins_prefix
    :param seed: the noise seed; grid g of seed s is the same bytes on every machine
    :param aws_conn_id: Airflow connection for an s3:// workspace
    """

    template_fields: Sequence[str] = (*CganBaseOperator.template_fields, "shards", "seed")
    ui_color = "#e8f0fe"

    def __init__(self, *, shards: list[dict], seed: int, **kwargs):
        super().__init__(**kwargs)
        self.shards = shards
        self.seed = seed

    def execute(self, context) -> dict:
        from cgan.layout.workspace import bins_pack_key
        from cgan.recipe.bins import write_bins_pack
        from cgan.run.shard import Shard

        store = self.store
        shards = [Shard.from_xcom(s) for s in self.shards]
        total = sum(s.count for s in shards)
        self.log.info("Writing %d input bins (seed %d) in %d shard(s) to %s", total, self.seed,
                      len(shards), store.uri)
        done = 0
        with tempfile.TemporaryDirectory(prefix="cgan-bins-") as tmp:
            for shard in shards:
                local = Path(tmp) / shard.bins_prefix
                store.delete_prefix(shard.bins_prefix)
                pack = write_bins_pack(local / "pack", shard.count, int(self.seed), start=shard.start)
                store.put_file(pack, bins_pack_key(shard.index))
                shutil.rmtree(local)
                done += shard.count
                self.log.info("bins %d/%d", done, total)
        return {"bins": done, "seed": int(self.seed)}
