"""Output bins in msame's layout: `<root>/<timestamp>/<input stem>_output_0.bin`.

The timestamp folder is found by discovery, never by parsing its name (msame has printed two
formats over the years). Reading checks the byte size against the contract.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np

from cgan.errors import InputBinError
from cgan.layout.tensors import BIN_DTYPE, IMAGE_SIZE, OUTPUT_SUFFIX, SAMPLES_PER_GRID, channels_from_output_size


def output_name(input_path: str | os.PathLike) -> str:
    """msame's directory-mode name: input stem (up to the last dot) + `_output_0.bin`."""
    return Path(input_path).stem + OUTPUT_SUFFIX


def grid_stem(output_path: str | os.PathLike) -> str:
    name = Path(output_path).name
    return name[: -len(OUTPUT_SUFFIX)] if name.endswith(OUTPUT_SUFFIX) else Path(name).stem


def new_run_dir(output_root: str | os.PathLike) -> Path:
    """Create `<root>/<YYYYmmdd_HHMMSS_micro>` (root created as needed), never reusing one."""
    root = Path(output_root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = root / datetime.now().strftime("%Y%m%d_%H%M%S_%f")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def list_outputs(run_dir: str | os.PathLike) -> list[Path]:
    return sorted(p for p in Path(run_dir).glob(f"*{OUTPUT_SUFFIX}") if not p.name.startswith("."))


def find_run_dir(path: str | os.PathLike) -> Path:
    """The run folder itself, or the single run folder under an output root."""
    path = Path(path)
    if not path.is_dir():
        raise InputBinError(f"output folder {path} does not exist; run `cgan infer` first")
    if list_outputs(path):
        return path
    runs = sorted(d for d in path.iterdir() if d.is_dir() and list_outputs(d))
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise InputBinError(f"no *{OUTPUT_SUFFIX} files in {path} or its subfolders")
    names = ", ".join(d.name for d in runs)
    raise InputBinError(f"{path} holds several inference runs ({names}); pass one of them")


def read_output_bin(path: str | os.PathLike) -> np.ndarray:
    """Read and check one output bin -> float32 [100, C, 28, 28]."""
    path = Path(path)
    size = path.stat().st_size
    try:
        channels = channels_from_output_size(size)
    except InputBinError as exc:
        raise InputBinError(f"output bin {path}: {exc}") from None
    data = np.fromfile(path, dtype=BIN_DTYPE)
    return data.reshape(SAMPLES_PER_GRID, channels, IMAGE_SIZE, IMAGE_SIZE).astype(np.float32)
