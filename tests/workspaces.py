"""A run's workspace as the inference tasks leave it (bins and ONNX Runtime outputs per shard), for
the tests of postprocess, the gate and publish."""

from __future__ import annotations

from pathlib import Path


def make_workspace(root: Path, onnx: Path, checkpoint: Path, *, grids: int, per_shard: int,
                   seed: int = 9, postprocess: bool = True):
    """(store, shards) of a file:// workspace at root, the shards' local files beside it; with
    `postprocess`, also the grids, perf and quality postprocess writes (judged against checkpoint)."""
    from cgan.layout.workspace import outputs_prefix
    from cgan.recipe.bins import write_bins
    from cgan.run.plan import plan_shards
    from cgan.run.postprocess import postprocess_run
    from cgan.runtimes.onnxruntime_runner import run_onnxruntime
    from cgan.storage.store import open_store, upload_dir

    store = open_store(root.as_uri())
    shards = plan_shards(grids, "cpu", [0], per_shard)
    local = root.parent / (root.name + "-local")
    for shard in shards:
        bins = local / shard.bins_prefix
        write_bins(bins, shard.count, seed, start=shard.start)
        upload_pack(store, shard, bins)
        run = run_onnxruntime(onnx, bins, local / f"out{shard.index}")
        upload_dir(store, run.output_dir, outputs_prefix(shard.index))
    if postprocess:
        postprocess_run(store, shards, checkpoint, log=lambda m: None)
    return store, shards


def upload_pack(store, shard, bins_dir: Path) -> None:
    """The shard's input bins in the workspace as input_bins leaves them: one pack, back to back."""
    from cgan.layout.workspace import bins_pack_key

    files = sorted(Path(bins_dir).glob("*.bin"))
    store.put_bytes(b"".join(f.read_bytes() for f in files), bins_pack_key(shard.index))
