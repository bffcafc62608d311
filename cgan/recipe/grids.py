"""Output bins -> 10x10 PNG grids (row i = noise vector i, column j = digit j).

Pixel = uint8(round(255 * (x + 1) / 2)), clipped to 0..255; C = 1 gives a grayscale PNG,
C = 3 an RGB PNG, 280x280 either way. Grid files are named after their input bin.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from isal import isal_zlib

from cgan.errors import InputBinError
from cgan.layout.tensors import (
    GRID_PIXELS,
    GRID_SIDE,
    IMAGE_SIZE,
    NUM_CLASSES,
    SUPPORTED_CHANNELS,
    output_bin_bytes,
)
from cgan.recipe.outputs import find_run_dir, grid_stem, list_outputs, read_output_bin
from cgan.storage.files import atomic_write_bytes


def to_pixels(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(255.0 * (x.astype(np.float64) + 1.0) / 2.0), 0, 255).astype(np.uint8)


def grid_array(samples: np.ndarray) -> np.ndarray:
    """[100, C, 28, 28] in (-1, 1) -> uint8 [280, 280] (C = 1) or [280, 280, 3] (C = 3)."""
    n, c, h, w = samples.shape
    if n != GRID_SIDE * NUM_CLASSES or (h, w) != (IMAGE_SIZE, IMAGE_SIZE) or c not in (1, 3):
        raise InputBinError(f"cannot make a 10x10 grid of samples shaped {samples.shape}")
    tiles = samples.reshape(GRID_SIDE, NUM_CLASSES, c, h, w).transpose(0, 3, 1, 4, 2)
    grid = to_pixels(tiles.reshape(GRID_PIXELS, GRID_PIXELS, c))
    return grid[:, :, 0] if c == 1 else grid


# Deflate level of the grid PNGs (ISA-L's levels 0..3). Measured on the committed generator's
# grids (280 x 280 gray, this 2-core machine, CPU time per grid): ISA-L level 1 0.15 ms for
# 25.4 KiB; zlib level 1 0.66 ms for 26.3 KiB, zlib-ng level 1 0.25 ms for 29.4 KiB; Pillow's
# default (zlib 6, every filter tried) 2.9 ms for 24.7 KiB.
PNG_COMPRESS_LEVEL = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(grid: np.ndarray, level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """The grid as an 8-bit grayscale (2-D) or RGB (H x W x 3) PNG, every row with filter type 0.

    Lossless at any level: the IDAT stream is standard zlib (RFC 1950), made by ISA-L's deflate
    (python-isal). Written here rather than by Pillow, whose encoder tries all five PNG filters
    on every row of an 8-bit image (no option turns that off) and uses zlib: on the committed
    generator's grids Pillow at level 1 took 1.64 ms per grid for 27.0 KB; filter 0 (the digits
    lie on a flat background) with ISA-L takes 0.15 ms of deflate for 25.4 KiB. Pillow and zlib
    read it back exactly (tests/cgan/recipe/test_grids.py)."""
    grid = np.ascontiguousarray(grid)
    if grid.dtype != np.uint8 or not (grid.ndim == 2 or (grid.ndim == 3 and grid.shape[2] == 3)):
        raise InputBinError(f"a PNG grid is uint8 H x W or H x W x 3, got {grid.dtype} {grid.shape}")
    height, width = grid.shape[:2]
    rows = np.zeros((height, 1 + grid[0].size), dtype=np.uint8)  # each row: filter byte 0, then pixels
    rows[:, 1:] = grid.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if grid.ndim == 2 else 2, 0, 0, 0)
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", isal_zlib.compress(rows.tobytes(), level)) + _png_chunk(b"IEND", b""))


def write_grids(
    output_dir: str | os.PathLike,
    grid_dir: str | os.PathLike,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """One PNG per output bin of a run folder (or of the single run under an output root)."""
    run_dir = find_run_dir(output_dir)
    outputs = list_outputs(run_dir)
    valid_sizes = {output_bin_bytes(c) for c in SUPPORTED_CHANNELS}
    for path in outputs:  # check every size before writing anything
        if path.stat().st_size not in valid_sizes:
            read_output_bin(path)  # raises with the size and the contract
    grid_dir = Path(grid_dir)
    written = []
    for path in outputs:
        grid = grid_array(read_output_bin(path))
        written.append(atomic_write_bytes(grid_dir / f"{grid_stem(path)}.png", png_bytes(grid)))
        if progress is not None:
            progress(len(written), len(outputs))
    return written
