import numpy as np
import pytest
from PIL import Image

from cgan.errors import InputBinError
from cgan.recipe.grids import grid_array, to_pixels, write_grids


def _labelled_samples(channels):
    """Sample k = 10*i + j filled with a value that encodes (i, j) and the channel."""
    samples = np.zeros((100, channels, 28, 28), np.float32)
    for k in range(100):
        i, j = divmod(k, 10)
        for c in range(channels):
            samples[k, c] = (i * 10 + j) / 100.0 - 0.5 + c * 0.3
    return samples


def test_pixel_mapping():
    x = np.array([-1.0, 0.0, 1.0, -2.0, 2.0, 0.5], np.float32)
    assert to_pixels(x).tolist() == [0, 128, 255, 0, 255, 191]  # 255*(x+1)/2 rounded, clipped


@pytest.mark.parametrize("channels", [1, 3])
def test_row_is_noise_vector_and_column_is_digit(channels):
    samples = _labelled_samples(channels)
    grid = grid_array(samples)
    assert grid.shape == ((280, 280) if channels == 1 else (280, 280, 3))
    for i in range(10):
        for j in range(10):
            tile = grid[28 * i : 28 * i + 28, 28 * j : 28 * j + 28]
            expected = to_pixels(samples[10 * i + j, :, 0, 0])
            assert np.all(tile.reshape(28 * 28, -1) == expected)


def _write_run(folder, channels, n=2):
    run = folder / "20261126_010203_000004"
    run.mkdir(parents=True)
    for g in range(n):
        _labelled_samples(channels).astype("<f4").tofile(run / f"grid_{g:08d}_output_0.bin")
    return run


@pytest.mark.parametrize("channels,mode", [(1, "L"), (3, "RGB")])
def test_write_grids_names_pngs_after_their_bins(tmp_path, channels, mode):
    _write_run(tmp_path / "out", channels)
    paths = write_grids(tmp_path / "out", tmp_path / "grids")
    assert [p.name for p in paths] == ["grid_00000000.png", "grid_00000001.png"]
    img = Image.open(paths[0])
    assert img.size == (280, 280) and img.mode == mode
    assert np.array_equal(np.asarray(img), grid_array(_labelled_samples(channels)))


def test_a_bad_output_bin_fails_before_any_grid_is_written(tmp_path):
    run = _write_run(tmp_path / "out", 1)
    (run / "grid_00000002_output_0.bin").write_bytes(b"\0" * 100)
    with pytest.raises(InputBinError, match="grid_00000002_output_0.bin"):
        write_grids(run, tmp_path / "grids")
    assert not (tmp_path / "grids").exists()


def test_png_level_trades_size_for_time_and_stays_lossless():
    import io

    import numpy as np
    from PIL import Image

    from cgan.recipe.grids import PNG_COMPRESS_LEVEL, png_bytes

    rng = np.random.default_rng(0)
    grid = (rng.random((280, 280)) ** 4 * 255).astype(np.uint8)  # mostly dark, like digit grids
    fastest, used, smallest = png_bytes(grid, level=0), png_bytes(grid), png_bytes(grid, level=3)
    assert PNG_COMPRESS_LEVEL == 1 and len(fastest) > len(smallest) and fastest != used  # the level is applied
    for data in (fastest, used, smallest):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), grid)


def test_the_png_stream_is_plain_zlib():
    """ISA-L writes the IDAT: Python's zlib (the reference inflate) must read it back to the rows."""
    import struct
    import zlib

    import numpy as np

    from cgan.recipe.grids import png_bytes

    grid = np.random.default_rng(2).integers(0, 256, size=(28, 28), dtype=np.uint8)
    data = png_bytes(grid)
    at = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4:at])
    rows = zlib.decompress(data[at + 4:at + 4 + length])
    assert rows == b"".join(b"\x00" + bytes(row) for row in grid)


@pytest.mark.parametrize("shape, mode", [((280, 280), "L"), ((280, 280, 3), "RGB"), ((3, 5), "L")])
def test_png_reads_back_exactly_in_pillow(shape, mode):
    import io

    import numpy as np
    from PIL import Image

    from cgan.recipe.grids import png_bytes

    grid = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    image = Image.open(io.BytesIO(png_bytes(grid)))
    image.load()  # decodes every row: a bad CRC, filter byte or length fails here
    assert image.mode == mode and image.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(image), grid)


def test_png_refuses_what_is_not_an_8_bit_grid():
    import numpy as np

    from cgan.recipe.grids import png_bytes

    with pytest.raises(InputBinError, match="uint8"):
        png_bytes(np.zeros((28, 28), dtype=np.float32))
    with pytest.raises(InputBinError, match="uint8"):
        png_bytes(np.zeros((28, 28, 4), dtype=np.uint8))
