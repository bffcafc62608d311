"""The recipe's data contracts: tensor shapes and byte sizes of input and output bins.

Input bin: raw little-endian float32 [100, 72]; columns 0..61 noise, 62..71 one-hot label.
Sample k = 10*i + j uses noise row i and digit j, so a 10x10 grid has one noise vector per
row and digit j in column j. Output bin: raw float32 [100, C, 28, 28], C in {1, 3}.
"""

from cgan.errors import InputBinError

NOISE_DIM = 62
NUM_CLASSES = 10
INPUT_DIM = NOISE_DIM + NUM_CLASSES  # 72
GRID_SIDE = 10
SAMPLES_PER_GRID = GRID_SIDE * NUM_CLASSES  # 100
IMAGE_SIZE = 28
GRID_PIXELS = GRID_SIDE * IMAGE_SIZE  # 280
FLOAT_BYTES = 4
INPUT_BIN_BYTES = SAMPLES_PER_GRID * INPUT_DIM * FLOAT_BYTES  # 28,800
SUPPORTED_CHANNELS = (1, 3)
INPUT_NAME = "image"  # the recipe's (misleading) name for the [z | one-hot] input
OUTPUT_NAME = "output1"
BIN_DTYPE = "<f4"


def output_bin_bytes(channels: int) -> int:
    """Byte size of one output bin for C output channels."""
    return SAMPLES_PER_GRID * channels * IMAGE_SIZE * IMAGE_SIZE * FLOAT_BYTES


def channels_from_output_size(num_bytes: int) -> int:
    """C of an output bin from its byte size; InputBinError when it matches no C."""
    for channels in SUPPORTED_CHANNELS:
        if num_bytes == output_bin_bytes(channels):
            return channels
    expected = ", ".join(f"{output_bin_bytes(c):,} (C={c})" for c in SUPPORTED_CHANNELS)
    raise InputBinError(f"{num_bytes:,} bytes is not an output bin size; expected {expected}: the runtime "
                        "wrote a partial or foreign output, re-run the shard's inference")


OUTPUT_SUFFIX = "_output_0.bin"  # msame's directory mode: <input stem>_output_0.bin


GRID_DIGITS = 8  # grid_00000042: one width for every run (up to 10^8 grids), so text order is grid order


def grid_stem_of(grid_index: int) -> str:
    """`grid_00000042`: the stem a grid's input bin, output bin and PNG share."""
    return f"grid_{grid_index:0{GRID_DIGITS}d}"


def bin_name(grid_index: int) -> str:
    """The input bin of grid `grid_index`."""
    return f"{grid_stem_of(grid_index)}.bin"
