"""InputBinsOperator: one shard's seeded input bins into the workspace's `bins/shard_NNNN/`
(cgan.layout.workspace) as one pack (the bins back to back: one object, not one per grid;
cgan.run.shard_inputs splits it on the worker), the shard's prefix emptied first. Mapped over the
run's shards, so no task's time grows with the run's size."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from operators.base import CganBaseOperator


class InputBinsOperator(CganBaseOperator):
    """Write one seeded input bin per grid of a shard, packed (the recipe's CGAN_prep_bin.info, which
    lists local paths, is for `cgan bins` on a host, not for the workspace).

    :param workspace: the run's workspace URI (see CganBaseOperator)
    :param shard: the mapped argument, a shard of the plan (cgan.run.plan.plan_shards)
    :param seed: the noise seed; grid g of seed s is the same bytes on every machine
    :param aws_conn_id: Airflow connection for an s3:// workspace
    """

    template_fields: Sequence[str] = (*CganBaseOperator.template_fields, "shard", "seed")
    ui_color = "#e8f0fe"

    def __init__(self, *, shard: dict, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.shard = shard
        self.seed = seed

    def execute(self, context) -> dict:
        from cgan.layout.workspace import bins_pack_key
        from cgan.recipe.bins import write_bins_pack
        from cgan.run.shard import Shard

        store = self.store
        shard = Shard.from_xcom(self.shard)
        self.log.info("Writing the %d input bins of shard %d (grids %d..%d, seed %d) to %s", shard.count, shard.index,
                      shard.start, shard.start + shard.count - 1, self.seed, store.uri)
        with tempfile.TemporaryDirectory(prefix="cgan-bins-") as tmp:
            store.delete_prefix(shard.bins_prefix)
            pack = write_bins_pack(Path(tmp) / "pack", shard.count, int(self.seed), start=shard.start)
            store.put_file(pack, bins_pack_key(shard.index))
        return {"shard": shard.index, "bins": shard.count, "seed": int(self.seed)}
