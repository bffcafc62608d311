"""Seeded input bins in the recipe's byte format, and the dataset info file.

Grid g of a run with seed s draws its 10 noise vectors from PCG64 seeded with [s, g], so the
bytes of grid g depend only on (s, g): the same on every machine, for any num_grids, and
shards can be written independently. Noise is U[0, 1) like upstream `torch.rand`.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cgan.errors import InputBinError
from cgan.layout.tensors import (
    BIN_DTYPE,
    GRID_SIDE,
    INPUT_BIN_BYTES,
    INPUT_DIM,
    NOISE_DIM,
    NUM_CLASSES,
    SAMPLES_PER_GRID,
    bin_name,
)
from cgan.storage.files import atomic_write_bytes

MAX_SEED = 2**63 - 1
MAX_GRIDS = 10_000_000  # grids of one run (grid names have 8 digits: cgan.layout.tensors.GRID_DIGITS)
INFO_NAME = "CGAN_prep_bin.info"


def validate_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputBinError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    return seed


def make_input_batch(seed: int, grid_index: int) -> np.ndarray:
    """The [100, 72] float32 input of one grid: row k = [z_(k//10) | one-hot(k % 10)]."""
    validate_seed(seed)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, grid_index])))
    noise = rng.random((GRID_SIDE, NOISE_DIM), dtype=np.float32)
    batch = np.zeros((SAMPLES_PER_GRID, INPUT_DIM), dtype=np.float32)
    batch[:, :NOISE_DIM] = np.repeat(noise, NUM_CLASSES, axis=0)
    batch[np.arange(SAMPLES_PER_GRID), NOISE_DIM + np.arange(SAMPLES_PER_GRID) % NUM_CLASSES] = 1.0
    return batch


def _check_grids(num_grids: int, seed: int, start: int) -> None:
    if isinstance(num_grids, bool) or not isinstance(num_grids, int) or not 1 <= num_grids <= MAX_GRIDS:
        raise InputBinError(f"num_grids must be an integer in 1..{MAX_GRIDS}, got {num_grids!r}")
    if not isinstance(start, int) or start < 0:
        raise InputBinError(f"start must be a non-negative integer, got {start!r}")
    validate_seed(seed)


def write_bins(out_dir: str | os.PathLike, num_grids: int, seed: int, start: int = 0) -> list[Path]:
    """Write grids start..start+num_grids-1 as bins into out_dir; returns their paths."""
    _check_grids(num_grids, seed, start)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for g in range(start, start + num_grids):
        data = make_input_batch(seed, g).astype(BIN_DTYPE, copy=False).tobytes()
        paths.append(atomic_write_bytes(out / bin_name(g), data))
    return paths


def write_bins_pack(path: str | os.PathLike, num_grids: int, seed: int, start: int = 0) -> Path:
    """Grids start..start+num_grids-1 as one file: their input bins back to back, in grid order
    (num_grids x INPUT_BIN_BYTES bytes; grid g at (g - start) x INPUT_BIN_BYTES). Written to a temp
    file and renamed, so a pack is whole or absent."""
    _check_grids(num_grids, seed, start)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    try:
        with open(tmp, "wb") as fh:
            for g in range(start, start + num_grids):
                fh.write(make_input_batch(seed, g).astype(BIN_DTYPE, copy=False).tobytes())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class BinsPack:
    """A local pack of grids start..start+count-1 (write_bins_pack), read in place: ais_bench's NPU
    process reads each call's inputs from it at their offset instead of from one file per grid.
    `arriving`: the download still writing it (a Future), which check() waits for, so a runtime
    can open its session meanwhile."""

    path: Path
    start: int
    count: int
    arriving: Future | None = field(default=None, compare=False)

    def check(self) -> BinsPack:
        """InputBinError unless the file holds exactly `count` bins (once it has arrived: the
        download's own error is raised as it is)."""
        if self.arriving is not None:
            self.arriving.result()
        size = self.path.stat().st_size
        if size != self.count * INPUT_BIN_BYTES:
            raise InputBinError(f"{self.path.name} has {size} bytes, not the {self.count} x {INPUT_BIN_BYTES} of "
                                f"grids {self.start}..{self.start + self.count - 1}: re-run input_bins")
        return self

    def names(self, folder: str | os.PathLike) -> list[Path]:
        """The path each grid's bin would have in `folder` (split_bins_pack's names), in grid order."""
        return [Path(folder) / bin_name(g) for g in range(self.start, self.start + self.count)]


def split_bins_pack(pack: str | os.PathLike, out_dir: str | os.PathLike, start: int, count: int) -> list[Path]:
    """A pack of grids start..start+count-1 back into one bin per grid in out_dir (the folder
    msame and the runtimes read); refuses a pack of another size."""
    paths = BinsPack(Path(pack), start, count).check().names(out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with open(pack, "rb") as fh:
        for path in paths:
            path.write_bytes(fh.read(INPUT_BIN_BYTES))
    return paths


def write_dataset_info(bin_dir: str | os.PathLike, info_path: str | os.PathLike | None = None) -> Path:
    """The recipe's gen_dataset_info.py format: `<index> <path> 72 100` per sorted *.bin."""
    bin_dir = Path(bin_dir)
    lines = [f"{i} {p} {INPUT_DIM} {SAMPLES_PER_GRID}" for i, p in enumerate(list_bins(bin_dir))]
    return atomic_write_bytes(info_path or bin_dir / INFO_NAME, ("\n".join(lines) + "\n").encode())


def list_bins(folder: str | os.PathLike) -> list[Path]:
    """Sorted *.bin files of a folder (temp files of interrupted writes are skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputBinError(f"input folder {folder} does not exist; create the bins with `cgan bins`")
    return sorted(p for p in folder.glob("*.bin") if not p.name.startswith("."))


def read_input_bin(path: str | os.PathLike) -> np.ndarray:
    """Read and check one input bin -> float32 [100, 72]."""
    path = Path(path)
    size = path.stat().st_size
    if size != INPUT_BIN_BYTES:
        raise InputBinError(
            f"input bin {path} has {size:,} bytes; an input bin is float32 "
            f"[{SAMPLES_PER_GRID},{INPUT_DIM}] = {INPUT_BIN_BYTES:,} bytes. Re-create it with "
            "`cgan bins`"
        )
    return np.fromfile(path, dtype=BIN_DTYPE).reshape(SAMPLES_PER_GRID, INPUT_DIM).astype(np.float32)
