"""The loop every local runtime shares: bins in, msame-layout outputs and perf.json out.

The bins are a folder (one file per grid) or a shard's BinsPack, read in place (the inference
tasks: the pack input_bins wrote is not split into a file per grid).

A runtime supplies `execute(batch [B, 72]) -> [B, C, 28, 28]`. Each call takes B/100 bins;
a short last group is padded with zero rows whose outputs are dropped. Every input is checked
before any work; every output is written atomically; perf.json is written last, so a run
folder with perf.json is complete.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cgan.errors import InferenceError, InputBinError
from cgan.layout.tensors import BIN_DTYPE, INPUT_BIN_BYTES, INPUT_DIM, SAMPLES_PER_GRID
from cgan.recipe.bins import BinsPack, list_bins, read_input_bin
from cgan.recipe.outputs import new_run_dir, output_name
from cgan.recipe.perf import PerfRecord, make_record
from cgan.storage.files import atomic_write_bytes

Progress = Callable[[int, int], None]
OnOutput = Callable[[Path, np.ndarray], None]
WRITE_AHEAD = 4


@dataclass
class InferenceRun:
    output_dir: Path
    outputs: list[Path]  # the raw output bins written to output_dir
    perf: PerfRecord


def _raise_first_error(futures: list[Future], wait: bool = False) -> None:
    """Re-raise the first failure of the output writer; drop finished futures."""
    for future in list(futures):
        if wait or future.done():
            future.result()
            futures.remove(future)


def resolve_inputs(inputs: str | os.PathLike | BinsPack) -> tuple[list[Path], Path | None]:
    """(each grid's bin, the pack or None): a folder's bins, checked, or a BinsPack's grids,
    named as its split bins would be (in the pack's folder), the pack's size checked."""
    if isinstance(inputs, BinsPack):
        return inputs.check().names(inputs.path.parent), inputs.path
    return check_inputs(inputs), None


def read_pack_rows(pack, first: int, n: int, into: np.ndarray) -> None:
    """Bins first..first+n-1 of an open pack (counted from its first grid) into the rows of
    `into`, float32 [>= n x 100, 72]; InputBinError when the file is shorter than it was."""
    want = n * INPUT_BIN_BYTES
    pack.seek(first * INPUT_BIN_BYTES)
    got = pack.readinto(into.data.cast("B")[:want])
    if got != want:
        raise InputBinError(f"{pack.name} gave {got:,} bytes at grid {first}, not {want:,}: it changed during the "
                            "run; re-run input_bins")


def check_inputs(input_dir: str | os.PathLike) -> list[Path]:
    bins = list_bins(input_dir)
    if not bins:
        raise InputBinError(f"no *.bin files in {input_dir}; create them with `cgan bins`")
    wrong = [p for p in bins if p.stat().st_size != INPUT_BIN_BYTES]
    if wrong:
        read_input_bin(wrong[0])  # raises with the size and the fix
    return bins


def check_batch(batch, warmup) -> None:
    """A model batch of whole grids and a warm-up count: InferenceError naming the bad one."""
    if not isinstance(batch, int) or batch <= 0 or batch % SAMPLES_PER_GRID:
        raise InferenceError(f"model batch {batch!r} is not a positive multiple of {SAMPLES_PER_GRID}")
    if not isinstance(warmup, int) or warmup < 0:
        raise InferenceError(f"warmup must be a non-negative integer, got {warmup!r}")


def check_output(y: np.ndarray, batch: int, backend: str, first_bin: Path) -> None:
    """One call's output: `batch` rows, every value finite."""
    if y.shape[0] != batch or not np.all(np.isfinite(y)):
        raise InferenceError(f"{backend} returned a bad output for {first_bin.name}: shape {y.shape}")


class OutputWriter:
    """Each call's outputs into the run folder (only `write_stems`' when given, None: every one),
    then to `on_output` with the path each has or would have had, and `progress`."""

    def __init__(self, run_dir: Path, total: int, write_stems: Collection[str] | None = None,
                 on_output: OnOutput | None = None, progress: Progress | None = None):
        self.run_dir, self.total, self.write_stems = run_dir, total, write_stems
        self.on_output, self.progress = on_output, progress
        self.outputs: list[Path] = []  # the raw output bins written
        self.made = 0  # outputs written or only handed on

    def group(self, bins: list[Path], y: np.ndarray) -> None:
        """The outputs of one call over `bins` (SAMPLES_PER_GRID rows of `y` each)."""
        for i, path in enumerate(bins):
            chunk = y[i * SAMPLES_PER_GRID : (i + 1) * SAMPLES_PER_GRID]
            out = self.run_dir / output_name(path)
            if self.write_stems is None or path.stem in self.write_stems:
                self.outputs.append(atomic_write_bytes(out, chunk.astype(BIN_DTYPE).tobytes()))
            self.made += 1
            if self.on_output is not None:
                self.on_output(out, chunk)
        if self.progress is not None:
            self.progress(self.made, self.total)


def run_folder(
    execute: Callable[[np.ndarray], np.ndarray],
    *,
    batch: int,
    input_dir: str | os.PathLike | BinsPack,
    output_root: str | os.PathLike,
    backend: str,
    device: str,
    threads: int | None,
    warmup: int = 1,
    progress: Progress | None = None,
    tool: dict[str, str] | None = None,
    on_output: OnOutput | None = None,
    write_stems: Collection[str] | None = None,
) -> InferenceRun:
    """Run every bin of input_dir; `on_output(path, samples)` sees each output once it is written.

    `write_stems`: the grid stems whose raw output bin is written to the run folder (None: every
    one). The others are only handed to `on_output` (with the path they would have had): a
    task that renders its grids as they come and hands over only the parity sample's raw outputs
    skips writing 313 KB per grid it would delete unread."""
    check_batch(batch, warmup)
    bins, pack_path = resolve_inputs(input_dir)
    per_call = batch // SAMPLES_PER_GRID
    wall_start = time.perf_counter()
    run_dir = new_run_dir(output_root)
    first = np.zeros((batch, INPUT_DIM), dtype=np.float32)
    for _ in range(warmup):
        execute(first)
    latencies: list[float] = []
    writer_of = OutputWriter(run_dir, len(bins), write_stems, on_output, progress)  # used on the writer thread

    # Outputs are written (and handed to on_output) on one background thread while the next
    # call runs; at most WRITE_AHEAD calls wait, so memory stays flat.
    slots = threading.BoundedSemaphore(WRITE_AHEAD)
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outputs") as writer, \
            (open(pack_path, "rb", buffering=0) if pack_path else contextlib.nullcontext()) as pack:
        for start in range(0, len(bins), per_call):
            group = bins[start : start + per_call]
            x = np.zeros((batch, INPUT_DIM), dtype=np.float32)
            if pack is not None:
                read_pack_rows(pack, start, len(group), x)
            else:
                for i, path in enumerate(group):
                    x[i * SAMPLES_PER_GRID : (i + 1) * SAMPLES_PER_GRID] = read_input_bin(path)
            t0 = time.perf_counter()
            y = execute(x)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            check_output(y, batch, backend, group[0])
            _raise_first_error(pending)
            slots.acquire()
            future = writer.submit(writer_of.group, group, y)
            future.add_done_callback(lambda _: slots.release())
            pending.append(future)
    _raise_first_error(pending, wait=True)
    notes = [
        f"latency = one {backend} call of batch {batch} ({per_call} grid(s)), execute only, "
        "no file I/O",
        f"{warmup} warm-up call(s) excluded",
    ]
    perf = make_record(
        backend=backend, device=device, batch=batch, latencies_ms=latencies, grids=writer_of.made,
        warmup_calls=warmup, threads=threads, wall_s=time.perf_counter() - wall_start,
        notes=notes, tool=tool,
    )
    perf.write(run_dir)
    return InferenceRun(output_dir=run_dir, outputs=writer_of.outputs, perf=perf)
