"""A shard's input bins, read from the run's workspace by the inference tasks and postprocess.

input_bins stores each shard's bins as one pack (cgan.layout.workspace.bins_pack_key,
cgan.recipe.bins.write_bins_pack): one object per shard, not one per grid, which on an S3 workspace
is one request instead of a thousand. A workspace written before packs (one bin per grid under
the shard's prefix) is still read, so a run in flight across an upgrade completes.
No Airflow import here.
"""

from __future__ import annotations

import os
from pathlib import Path

from cgan.errors import InputBinError
from cgan.layout.tensors import INPUT_BIN_BYTES
from cgan.layout.workspace import BINS_PACK_NAME, bin_key, bins_pack_key
from cgan.recipe.bins import split_bins_pack
from cgan.storage.store import download_keys


def fetch_shard_bins(store, shard: dict, local_dir: str | os.PathLike) -> list[Path]:
    """The shard's input bins, one file per grid in local_dir (sorted by grid); InputBinError
    when the workspace has none."""
    prefix = shard["bins_prefix"]
    keys = store.list(prefix)
    pack = bins_pack_key(shard["shard"])
    local_dir = Path(local_dir)
    if pack in keys:
        if not {"start", "count"} <= set(shard):
            raise InputBinError(f"shard {shard.get('shard')}: {pack} needs the shard's start and count "
                                "(a shard of the run's plan has them)")
        local_pack = store.get_file(pack, local_dir.with_name(f"{local_dir.name}.{BINS_PACK_NAME}"))
        try:
            return split_bins_pack(local_pack, local_dir, shard["start"], shard["count"])
        finally:
            local_pack.unlink(missing_ok=True)
    bins = [k for k in keys if k.endswith(".bin")]
    if not bins:
        raise InputBinError(f"shard {shard.get('shard')}: no input bins under {prefix}/ in {store.uri}: "
                            "re-run input_bins")
    return download_keys(store, bins, local_dir)


def fetch_input_bin(store, shard: dict, grid: int, local: str | os.PathLike) -> Path:
    """One grid's input bin (postprocess's parity sample): a ranged read of the shard's pack,
    or the grid's own bin in a workspace written before packs."""
    index = shard["shard"]
    pack = bins_pack_key(index)
    if not store.exists(pack):
        return store.get_file(bin_key(index, grid), local)
    if not 0 <= grid - shard["start"] < shard["count"]:
        raise InputBinError(f"grid {grid} is not in shard {index} (grids {shard['start']}.."
                            f"{shard['start'] + shard['count'] - 1})")
    offset = (grid - shard["start"]) * INPUT_BIN_BYTES
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(store.get_range(pack, offset, INPUT_BIN_BYTES))
    return local
