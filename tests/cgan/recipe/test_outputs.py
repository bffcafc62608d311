import numpy as np
import pytest

from cgan.errors import InputBinError
from cgan.recipe.outputs import find_run_dir, grid_stem, new_run_dir, output_name, read_output_bin


def _fake_output(folder, stem, channels=1):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}_output_0.bin"
    np.zeros((100, channels, 28, 28), "<f4").tofile(path)
    return path


def test_names_follow_msame_directory_mode():
    assert output_name("/x/grid_00000007.bin") == "grid_00000007_output_0.bin"
    assert grid_stem("/y/grid_00000007_output_0.bin") == "grid_00000007"


def test_new_run_dirs_are_distinct(tmp_path):
    a, b = new_run_dir(tmp_path / "deep" / "root"), new_run_dir(tmp_path / "deep" / "root")
    assert a != b and a.parent == b.parent == tmp_path / "deep" / "root"


@pytest.mark.parametrize("stamp", ["20211113_073952", "2023610_9_5_6_123456"])
def test_discovers_the_single_run_whatever_its_timestamp_format(tmp_path, stamp):
    _fake_output(tmp_path / stamp, "grid_00000000")
    (tmp_path / "empty_dir").mkdir()
    assert find_run_dir(tmp_path) == tmp_path / stamp
    assert find_run_dir(tmp_path / stamp) == tmp_path / stamp


def test_several_runs_are_ambiguous(tmp_path):
    _fake_output(tmp_path / "20211113_073952", "grid_00000000")
    _fake_output(tmp_path / "2023610_9_5_6_123456", "grid_00000000")
    with pytest.raises(InputBinError, match="several inference runs .* pass one of them"):
        find_run_dir(tmp_path)


def test_no_outputs_and_missing_folder(tmp_path):
    with pytest.raises(InputBinError, match="no \\*_output_0.bin"):
        find_run_dir(tmp_path)
    with pytest.raises(InputBinError, match="does not exist"):
        find_run_dir(tmp_path / "nope")


def test_read_output_bin_checks_size(tmp_path):
    assert read_output_bin(_fake_output(tmp_path, "a", 3)).shape == (100, 3, 28, 28)
    bad = tmp_path / "b_output_0.bin"
    bad.write_bytes(b"\0" * 1234)
    with pytest.raises(InputBinError, match=r"1,234 bytes .*313,600 \(C=1\), 940,800 \(C=3\)"):
        read_output_bin(bad)
