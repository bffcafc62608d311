"""A shard's input bins, read from the run's workspace by the inference tasks and postprocess.

input_bins stores each shard's bins as one pack (cgan.layout.workspace.bins_pack_key,
cgan.recipe.bins.write_bins_pack): one object per shard, not one per grid, which on an S3
workspace is one request instead of a thousand.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor
from pathlib import Path

from cgan.errors import InputBinError
from cgan.layout.tensors import INPUT_BIN_BYTES
from cgan.layout.workspace import BINS_PACK_NAME, bins_pack_key
from cgan.recipe.bins import BinsPack, split_bins_pack
from cgan.run.shard import Shard


def fetch_shard_bins(store, shard: Shard, local_dir: str | os.PathLike) -> list[Path]:
    """The shard's input bins, one file per grid in local_dir (sorted by grid); InputBinError
    when the workspace has no pack for it."""
    local_dir = Path(local_dir)
    pack = fetch_shard_pack(store, shard, local_dir.with_name(f"{local_dir.name}.{BINS_PACK_NAME}"))
    try:
        return split_bins_pack(pack.path, local_dir, shard.start, shard.count)
    finally:
        pack.path.unlink(missing_ok=True)


def fetch_shard_pack(store, shard: Shard, local: str | os.PathLike) -> BinsPack:
    """The shard's input bins as its one pack, at `local`, size checked (no file per grid)."""
    key = bins_pack_key(shard.index)
    if not store.exists(key):
        raise InputBinError(f"shard {shard.index}: no input bins under {shard.bins_prefix}/ in {store.uri}: "
                            "re-run input_bins")
    return BinsPack(Path(store.get_file(key, Path(local))), shard.start, shard.count).check()


def start_shard_pack(store, shard: Shard, local: str | os.PathLike, fetching: Executor) -> BinsPack:
    """fetch_shard_pack on `fetching` (a thread): the pack comes back at once, `arriving`, so the
    runtime opens its session while it downloads; its check() waits for it and raises its error."""
    local = Path(local)
    return BinsPack(local, shard.start, shard.count, arriving=fetching.submit(fetch_shard_pack, store, shard, local))


def fetch_input_bin(store, shard: Shard, grid: int, local: str | os.PathLike) -> Path:
    """One grid's input bin (postprocess's parity sample): a ranged read of the shard's pack."""
    if grid not in shard.grids:
        raise InputBinError(f"grid {grid} is not in shard {shard.index} (grids {shard.start}.."
                            f"{shard.start + shard.count - 1})")
    offset = (grid - shard.start) * INPUT_BIN_BYTES
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(store.get_range(bins_pack_key(shard.index), offset, INPUT_BIN_BYTES))
    return local
