"""One shard through a runtime, as every inference task runs it (the protocol: docs/data-layout.md).

`run_shard` clears the shard's outputs of an earlier try, fetches its input bins, has the
runtime write the outputs while a ShardRenderer makes the grids and packs them (or renders them
after a tool that writes every output at the end, such as msame, once the NPU is free), and
hands over what postprocess needs, render.json last. The runtime is a function given by the task: ONNX Runtime
on the CPU, msame or ais_bench on a leased NPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cgan.recipe.bins import BinsPack
from cgan.recipe.outputs import list_outputs
from cgan.recipe.perf import PERF_NAME, PerfRecord, peak_rss_mb
from cgan.run.shard import Shard
from cgan.run.shard_inputs import fetch_shard_bins, start_shard_pack
from cgan.run.shard_render import ShardRenderer, hand_over, render_outputs
from cgan.run.staging import ShardPacker, WorkspacePacks
from cgan.runtimes.folder_runner import InferenceRun, OnOutput, Progress

# (input bins folder, or the shard's BinsPack with bins_pack=True, possibly still `arriving`: its
# check() waits for it; output root; on_output or None)
# -> the run, and files to hand over beside it
Runtime = Callable[[Any, Path, OnOutput | None], tuple[InferenceRun, Sequence[Path]]]  # Any: Path or BinsPack


@dataclass
class ShardResult:
    """What one inference task made of its shard."""

    shard: Shard
    perf: PerfRecord
    tally: dict
    raw_outputs_kept: int
    staged_root: str | None
    cpu_s: dict = field(default_factory=dict)  # this process's CPU seconds by part (make bench)
    peak_rss_mb: float | None = None

    def as_xcom(self) -> dict:
        return {"shard": self.shard.index, "outputs_prefix": self.shard.outputs_prefix, "grids": self.perf.grids,
                "grids_per_s": self.perf.grids_per_s, "raw_outputs_kept": self.raw_outputs_kept,
                "staged_root": self.staged_root}


def run_shard(store, shard: Shard, work_dir: Path, runtime: Runtime, *, render_while_running: bool = True,
              stager=None, progress: Progress | None = None, log: Callable[[str], object] = print,
              bins_pack: bool = False) -> ShardResult:
    """The shard's grids made by `runtime`, rendered into packs (staged in the publish bucket
    with a `stager`, cgan.run.staging.BucketPacks, else into the workspace) and handed over.
    `bins_pack`: the runtime reads the shard's bins pack in place (the tasks' ONNX Runtime and
    ais_bench), so it is not split into a file per grid first; msame reads a folder. The pack
    downloads while the runtime opens its session (it is handed over `arriving`)."""
    store.delete_prefix(shard.outputs_prefix)  # no render.json of an earlier try survives this one
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-bins") as fetching:  # waited for on the way out
        inputs: Path | BinsPack
        if bins_pack:
            inputs = start_shard_pack(store, shard, work_dir / "shard-bins", fetching)
        else:
            fetch_shard_bins(store, shard, work_dir / "bins")
            inputs = work_dir / "bins"
        sink = stager or WorkspacePacks(store)
        packer = ShardPacker(sink, shard.start, shard.count, work_dir / "packs")
        log(f"shard {shard.index}: {shard.count} grid(s) in {len(packer.ranges)} pack(s), uploaded to "
            f"{sink.where()} as each fills")
        cpu0 = time.process_time()
        if render_while_running:
            with ShardRenderer(packer, judge=shard.judged_stems) as renderer:
                run, files = runtime(inputs, work_dir / "out", renderer.submit)
                tally = renderer.finish()
            parts = {**renderer.cpu_s, **packer.cpu_s}
        else:
            run, files = runtime(inputs, work_dir / "out", None)
            render0 = time.process_time()
            tally = render_outputs(packer, list_outputs(run.output_dir), progress=progress,
                                   judge=shard.judged_stems)
            parts = {"render": time.process_time() - render0}
    cpu_s = {"inference": round(time.process_time() - cpu0 - sum(parts.values()), 3),
             **{part: round(secs, 3) for part, secs in parts.items()}}
    handed = hand_over(store, shard, run.output_dir, tally, [*files, run.output_dir / PERF_NAME])
    cpu_s["task_process"] = round(time.process_time(), 3)  # start-up, DAG parse and downloads too
    return ShardResult(shard, run.perf, tally, handed["raw_outputs"], stager.root if stager else None, cpu_s,
                       peak_rss_mb())
