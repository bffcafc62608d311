"""npu-smi parsing on documented sample tables, and NPU device lists (the shard plan itself:
tests/cgan/run/test_plan.py)."""

import pytest

from cgan.ascend.errors import AscendError
from cgan.ascend.npu_smi import parse_npu_smi_info, read_npu_smi, soc_version_of
from cgan.ascend.shards import parse_devices
from tests.standins.fixtures import STANDINS

SAMPLES = STANDINS / "npu_smi_samples"


def test_310p3_card_with_device_column():
    chips = parse_npu_smi_info((SAMPLES / "310p3_x2.txt").read_text())
    assert [(c.npu_id, c.name, c.chip_id, c.device_id, c.health, c.bus_id) for c in chips] == [
        (0, "310P3", 0, 0, "OK", "0000:82:00.0"),
        (1, "310P3", 0, 1, "OK", "0000:89:00.0"),
    ]
    assert soc_version_of(chips) == "Ascend310P3"


def test_910b_host_without_device_column_and_process_table():
    chips = parse_npu_smi_info((SAMPLES / "910b4_x2.txt").read_text())
    assert [(c.npu_id, c.name, c.device_id, c.bus_id) for c in chips] == [
        (0, "910B4", 0, "0000:C1:00.0"), (1, "910B4", 1, "0000:C2:00.0")]
    assert soc_version_of(chips) == "Ascend910B4"


def test_310b_board_with_na_bus_id():
    chips = parse_npu_smi_info((SAMPLES / "310b1_x1.txt").read_text())
    assert [(c.name, c.device_id, c.bus_id) for c in chips] == [("310B1", 0, "NA")]
    assert soc_version_of(chips) == "Ascend310B1"


NPU5 = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 25.5.2                   Version: 25.5.2                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 5     910B4               | OK            | 89.9        39                0    / 0             |
| 0                         | 0000:41:00.0  | 0           0    / 0          2922 / 32768         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
"""


def test_atlas_300_npu_ids_are_not_device_ids():
    """Four 310 chips per card: NPU 2048/2049 (card numbers), Device 0..7 (what --device takes)."""
    chips = parse_npu_smi_info((SAMPLES / "atlas300_310_x8.txt").read_text())
    assert [(c.npu_id, c.chip_id, c.device_id) for c in chips[3:5]] == [(2048, 3, 3), (2049, 0, 4)]
    assert [c.device_id for c in chips] == list(range(8)) and soc_version_of(chips) == "Ascend310"


def test_an_atlas_300i_duo_lists_its_card_once_per_chip():
    """Two 310P3 chips per card: the NPU row repeated, chips 0 and 1, one Bus-Id; card ids 1, 2."""
    chips = parse_npu_smi_info((SAMPLES / "duo_x2.txt").read_text())
    assert [(c.npu_id, c.chip_id, c.device_id, c.bus_id) for c in chips] == [
        (1, 0, 0, "0000:01:00.0"), (1, 1, 1, "0000:01:00.0"), (2, 0, 2, "0000:81:00.0"), (2, 1, 3, "0000:81:00.0")]
    assert soc_version_of(chips) == "Ascend310P3"
    health = parse_npu_smi_info((SAMPLES / "310p3_x4_health.txt").read_text())
    assert [c.health for c in health] == ["OK", "Alarm", "Critical", "Warning"]


def test_container_shows_npu_5_as_logical_device_0():
    chips = parse_npu_smi_info(NPU5)
    assert [(c.npu_id, c.device_id, c.name) for c in chips] == [(5, 0, "910B4")]


def test_no_soc_version_for_a3_names_mixed_models_or_nothing():
    a3 = (SAMPLES / "910b4_x2.txt").read_text().replace("910B4  ", "Ascend910")
    assert soc_version_of(parse_npu_smi_info(a3)) is None
    mixed = (SAMPLES / "910b4_x2.txt").read_text().replace("| 1     910B4", "| 1     910B3")
    assert soc_version_of(parse_npu_smi_info(mixed)) is None
    assert parse_npu_smi_info("dcmi module initialize failed. ret is -8005") == []
    assert soc_version_of([]) is None


def test_read_npu_smi_with_the_standin(standins_on_path, monkeypatch):
    assert [c.device_id for c in read_npu_smi()] == [0, 1]
    monkeypatch.setenv("STANDIN_NPU_SMI_SAMPLE", "310b1_x1.txt")
    assert soc_version_of(read_npu_smi()) == "Ascend310B1"
    monkeypatch.setenv("STANDIN_NPU_SMI_FAIL", "1")
    assert read_npu_smi() is None


def test_read_npu_smi_absent(clean_env):
    assert read_npu_smi("no-such-npu-smi") is None


@pytest.mark.parametrize("devices, message", [
    ([], "empty"), ("", "empty"), ([0, 0], "twice"), ([256], "0..255"), ("0,x", "comma-separated"),
    ([True], "0..255"),
])
def test_bad_device_lists(devices, message):
    with pytest.raises(AscendError, match=message):
        parse_devices(devices)
