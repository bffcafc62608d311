"""The run workspace: every key that a run's tasks hand each other is spelled here, and only here.

Layout under the artifact root (CGAN_ARTIFACT_ROOT, `file://` or `s3://`):

    runs/<run key>/                         one run's workspace, removed once the run is published
        bins/shard_NNNN/inputs.pack         a shard's input bins back to back
        outputs/shard_NNNN/                 what an inference task hands over: perf.json, the
                                            tool's log, render.json (written last) and only the
                                            raw outputs postprocess checks for parity (every one
                                            with keep_raw_outputs): grid_GGGGGGGG_output_0.bin
        packs/pack_GGGGGGGG.tar, .json      grid packs (cgan.layout.packs) made by the inference
                                            tasks when they are given no publish bucket (else
                                            staged there, cgan.run.staging), or by postprocess
                                            re-rendering a shard
        staged.json                         postprocess: every shard's packs, for publish
        perf/perf.json, perf/latency.png, perf/shard_NNNN.<name>     made by postprocess
        quality/quality.json                                        made by postprocess
        logs/atc.log
    models/<key>/cgan.onnx, entry.json      the exported ONNX, once per checkpoint + export
                                            settings (cgan.recipe.model_store), shared by every run
    atc-cache/<key>/model.om, entry.json    the om, once per ONNX + atc flags + toolkit
                                            (cgan.ascend.atc_cache), shared by every run

A publish copies the workspace's `perf/` and `quality/` (cgan.layout.published.SECTIONS) and any
packs in it under the same keys into its attempt in the publish bucket.
"""

from __future__ import annotations

from cgan.layout.published import RUNS_PREFIX
from cgan.layout.tensors import OUTPUT_SUFFIX, bin_name
from cgan.storage.keys import StoreError, join

BINS_PREFIX = "bins"
OUTPUTS_PREFIX = "outputs"
PERF_PREFIX = "perf"
LOGS_PREFIX = "logs"

ATC_LOG_KEY = f"{LOGS_PREFIX}/atc.log"
UNCACHED_OM_PREFIX = "om"  # an om the conversion cache would not keep (toolkit version unknown)
SHARD_PERF_NAME = "perf.json"
RENDER_NAME = "render.json"
STAGED_KEY = "staged.json"
STAGED_VERSION = 2  # of staged.json and of render.json's `packs` entry: 2, grids in packs
BINS_PACK_NAME = "inputs.pack"  # not *.bin: a reader of one-bin-per-grid shards skips it

MODELS_PREFIX = "models"  # beside runs/ under the artifact root, not in a run's workspace


def workspace_uri(artifact_root: str, run_key: str) -> str:
    """The store URI of one run's workspace under the artifact root."""
    return f"{artifact_root.rstrip('/')}/{RUNS_PREFIX}{run_key}"


def grid_name(grid: int) -> str:
    """`grid_00000042`: the stem shared by a grid's input bin, output bin and PNG."""
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 0:
        raise StoreError(f"grid index must be a non-negative integer, got {grid!r}: workspace keys are made "
                         "from the run's plan; clear the run from its plan task")
    return bin_name(grid)[: -len(".bin")]


def _shard(index: int) -> str:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise StoreError(f"shard index must be a non-negative integer, got {index!r}: workspace keys are made "
                         "from the run's plan; clear the run from its plan task")
    return f"shard_{index:04d}"


def bins_prefix(shard: int) -> str:
    return f"{BINS_PREFIX}/{_shard(shard)}"


def bins_pack_key(shard: int) -> str:
    """The shard's input bins back to back in grid order (cgan.recipe.bins.write_bins_pack): one object
    per shard instead of one per grid."""
    return f"{bins_prefix(shard)}/{BINS_PACK_NAME}"


def outputs_prefix(shard: int) -> str:
    return f"{OUTPUTS_PREFIX}/{_shard(shard)}"


def output_key(shard: int, grid: int) -> str:
    return f"{outputs_prefix(shard)}/{grid_name(grid)}{OUTPUT_SUFFIX}"


def shard_file_key(shard: int, name: str) -> str:
    """A file an inference task hands over beside its outputs: perf.json, msame.log, render.json."""
    return join(outputs_prefix(shard), name)


def render_key(shard: int) -> str:
    return shard_file_key(shard, RENDER_NAME)


def shard_perf_key(shard: int) -> str:
    return shard_file_key(shard, SHARD_PERF_NAME)


def published_shard_file_key(shard: int, name: str) -> str:
    """Where postprocess puts a shard's perf record or tool log: `perf/shard_NNNN.<name>`."""
    return f"{PERF_PREFIX}/{_shard(shard)}.{name}"


def model_prefix(key: str) -> str:
    """One content-addressed model entry under the artifact root (cgan.recipe.model_store)."""
    return f"{MODELS_PREFIX}/{key}"


def check_not_published_area(artifact_root: str, publish_bucket: str) -> None:
    """Refuse an artifact root whose `runs/` is the publish bucket's `runs/` (the published runs):
    removing a workspace there would remove a published run."""
    from cgan.storage.keys import StoreError

    if artifact_root.startswith("s3://") and artifact_root[5:].strip("/") == publish_bucket:
        raise StoreError(
            f"the artifact root {artifact_root} is the root of the publish bucket, so run workspaces "
            f"({RUNS_PREFIX}<run>) would be the published runs: give CGAN_ARTIFACT_ROOT another "
            f"bucket or a prefix, e.g. s3://{publish_bucket}-artifacts or s3://{publish_bucket}/artifacts"
        )


def remove_workspace(root_store, run_key: str) -> tuple[int, int]:
    """Delete one run's workspace; (objects, bytes) it held."""
    prefix = join(RUNS_PREFIX, run_key)
    usage = root_store.usage(prefix)
    root_store.delete_prefix(prefix)
    return usage


def expired_workspaces(root_store, *, now: float, retention_days: float, keep: str = "") -> dict[str, float]:
    """{run key: age in days} of workspaces untouched for more than retention_days (not `keep`)."""
    ages = {name: (now - newest) / 86400 for name, newest in root_store.folder_ages(join(RUNS_PREFIX)).items()}
    return {name: age for name, age in sorted(ages.items()) if age > retention_days and name != keep}
