"""The msame wrapper against the stand-in msame (tests/standins/msame: ONNX Runtime, no NPU)."""

import json
import os
import re
import shutil
import signal
import time

import numpy as np
import pytest

from cgan.ascend.errors import AscendError, MsameError
from cgan.ascend.msame import run_msame
from cgan.ascend.msame_log import printed_success
from cgan.layout.tensors import output_bin_bytes
from cgan.recipe.bins import read_input_bin, write_dataset_info
from cgan.recipe.outputs import find_run_dir, read_output_bin
from tests.standins.fixtures import STANDINS

OLD_TS = re.compile(r"^\d{8}_\d{6}(_\d+)?$")
NEW_TS = re.compile(r"^\d{5,8}_\d{1,2}_\d{1,2}_\d{1,2}_\d{1,6}(_\d+)?$")


def reference(onnx_path, bin_path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": read_input_bin(bin_path)})[0]


@pytest.mark.parametrize("ts, pattern", [("old", OLD_TS), ("new", NEW_TS)])
def test_folder_run_outputs_perf_and_log(tmp_path, standins_on_path, calls, standin_om,
                                         upstream_onnx, bins3, monkeypatch, ts, pattern):
    monkeypatch.setenv("STANDIN_MSAME_TS", ts)
    monkeypatch.setenv("STANDIN_NPU_SMI_SAMPLE", "atlas300_310_x8.txt")  # devices 0..7
    lines = []
    run = run_msame(standin_om, bins3, tmp_path / "out", device=3, channels=1, on_line=lines.append)
    assert pattern.match(run.output_dir.name), run.output_dir.name
    assert run.output_dir.parent == tmp_path / "out"
    assert [p.name for p in run.outputs] == [f"grid_0000000{i}_output_0.bin" for i in range(3)]
    np.testing.assert_allclose(read_output_bin(run.outputs[1]),
                               reference(upstream_onnx, bins3 / "grid_00000001.bin"), atol=1e-6)
    perf = json.loads((run.output_dir / "perf.json").read_text())
    assert perf["backend"] == "msame" and perf["device"] == "npu:3"
    assert perf["grids"] == 3 and perf["calls"] == 2 and perf["warmup_calls"] == 1
    assert perf["batch"] == 100 and perf["latency_ms"]["mean"] > 0
    assert "msame_average_ms" in perf["tool"]
    log = (run.output_dir / "msame.log").read_text()
    assert "Execute sample success" in log and log.splitlines() == lines
    assert find_run_dir(tmp_path / "out") == run.output_dir  # staging folders are gone
    assert [p.name for p in (tmp_path / "out").iterdir()] == [run.output_dir.name]
    argv = calls("msame")[0]["argv"]
    assert argv[argv.index("--device") + 1] == "3" and argv[argv.index("--outfmt") + 1] == "BIN"
    assert "device 3 is ACL device 3=bus-0000-06-00.0-chip3 (310, OK) (npu-smi info)" in perf["notes"]


def test_single_file_input_with_loops(tmp_path, standins_on_path, standin_om, bins3):
    run = run_msame(standin_om, bins3 / "grid_00000002.bin", tmp_path / "out", loop=4)
    assert [p.name for p in run.outputs] == ["cgan_output_0.bin"]  # <om name>_output_0.bin
    assert run.perf.loops == 4 and run.perf.calls == 3 and run.perf.warmup_calls == 1
    assert run.outputs[0].stat().st_size == output_bin_bytes(1)


def test_folder_input_holding_other_files_is_staged_bins_only(tmp_path, standins_on_path, standin_om, bins3):
    write_dataset_info(bins3)  # `cgan bins` leaves CGAN_prep_bin.info beside the bins
    run = run_msame(standin_om, bins3, tmp_path / "out")
    assert len(run.outputs) == 3
    assert "[ERROR]" not in run.log_path.read_text()


def test_output_folder_found_without_the_printed_line(tmp_path, standins_on_path, standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_MSAME_NO_DIR_LINE", "1")
    run = run_msame(standin_om, bins3, tmp_path / "out")
    assert len(run.outputs) == 3
    assert "one new folder" in run.perf.tool["output_folder"]


def test_printed_line_is_preferred(tmp_path, standins_on_path, standin_om, bins3):
    run = run_msame(standin_om, bins3, tmp_path / "out")
    assert "output line" in run.perf.tool["output_folder"]


def test_each_run_has_its_own_cwd_so_a_stray_acl_json_is_not_read(tmp_path, standins_on_path, calls,
                                                                    standin_om, bins3, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acl.json").write_text("{ not json")  # would break aclInit in this CWD
    run_msame(standin_om, bins3, tmp_path / "a")
    run_msame(standin_om, bins3, tmp_path / "a")  # same root, same second: separate folders
    seen = calls("msame")
    assert not any(c["acl_json"] for c in seen)
    assert len({c["cwd"] for c in seen}) == 2 and all(c["cwd"] != str(tmp_path) for c in seen)
    assert len([d for d in (tmp_path / "a").iterdir()]) == 2


def test_stray_acl_json_really_breaks_the_standin(tmp_path, standins_on_path, standin_om, bins3):
    """The trap the private CWD avoids: the stand-in reads ./acl.json like msame."""
    import subprocess

    (tmp_path / "acl.json").write_text("{ not json")
    proc = subprocess.run(["msame", "--model", str(standin_om), "--input", str(bins3),
                           "--output", str(tmp_path / "o")], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1 and "[ERROR] acl init failed" in proc.stdout


def test_output_parent_is_created(tmp_path, standins_on_path, standin_om, bins3):
    run = run_msame(standin_om, bins3, tmp_path / "deep" / "er" / "out")
    assert run.output_dir.parent == tmp_path / "deep" / "er" / "out"


@pytest.mark.parametrize("mode, expected", [
    ("output_error", r"\[ERROR\] lines printed.*missing.*EE9999: .*\n.*\[ERROR\] aclrtMemcpy failed"),
    ("no_success", r"'Execute sample success' never printed"),
    ("missing_output", r"output grid_00000000_output_0.bin is missing"),
    ("short_output", r"grid_00000000_output_0.bin has 156,800 bytes, expected 313,600"),
])
def test_exit_zero_failures_are_caught(tmp_path, standins_on_path, standin_om, bins3, monkeypatch, mode, expected):
    monkeypatch.setenv("STANDIN_MSAME_MODE", mode)
    with pytest.raises(MsameError, match=re.compile(expected, re.S)) as info:
        run_msame(standin_om, bins3, tmp_path / "out", channels=1)
    assert info.value.exit_code == 0
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-done left behind


def test_failed_execute_on_the_second_file_exits_1(tmp_path, standins_on_path, standin_om, bins3, monkeypatch):
    """msame's folder loop: `if (i != 1) continue; else return FAILED` -> exit 1 on index 1."""
    monkeypatch.setenv("STANDIN_MSAME_FAIL_FILE", "grid_00000001.bin")
    with pytest.raises(MsameError, match="exit code 1") as info:
        run_msame(standin_om, bins3, tmp_path / "out")
    assert info.value.exit_code == 1
    assert info.value.error_lines[-2:] == ["[ERROR] model execute failed", "[ERROR] Sample process failed"]
    assert info.value.error_lines[0].startswith("EE9999: ")  # ACL's own message, quoted first


@pytest.mark.parametrize("fail, missing", [
    ("grid_00000002.bin", ["grid_00000002"]),  # the last file: logged, skipped, exit 0
    ("grid_00000000.bin", ["grid_00000000", "grid_00000001"]),  # input not freed: the next fails too
])
def test_skipped_file_in_folder_mode_is_caught(tmp_path, standins_on_path, standin_om, bins3, monkeypatch,
                                               fail, missing):
    monkeypatch.setenv("STANDIN_MSAME_FAIL_FILE", fail)
    with pytest.raises(MsameError, match="model execute failed") as info:
        run_msame(standin_om, bins3, tmp_path / "out")
    for stem in missing:
        assert f"{stem}_output_0.bin is missing" in str(info.value)
    assert "[ERROR] model execute failed" in info.value.error_lines


def test_every_file_failing_prints_nan_and_is_caught(tmp_path, standins_on_path, standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_MSAME_MODE", "exec_fail")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "grid_00000000.bin").write_bytes((bins3 / "grid_00000000.bin").read_bytes())
    lines = []
    with pytest.raises(MsameError, match="no inference time printed") as info:
        run_msame(standin_om, tmp_path / "one", tmp_path / "out", on_line=lines.append)
    assert info.value.exit_code == 0 and "Inference average time : -nan ms" in lines
    assert not any(line.startswith("Inference time") for line in lines)


def test_channel_mismatch_is_caught(tmp_path, standins_on_path, standin_om, bins3):
    with pytest.raises(MsameError, match="expected 940,800"):
        run_msame(standin_om, bins3, tmp_path / "out", channels=3)


def test_nonzero_exit_quotes_msame_and_acl(tmp_path, standins_on_path, standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_MSAME_DEVICES", "0")
    with pytest.raises(MsameError) as info:
        run_msame(standin_om, bins3, tmp_path / "out", device=5, npu_smi=None)
    text = str(info.value)
    assert "exit code 1" in text and "[ERROR] acl open device 5 failed" in text
    assert info.value.exit_code == 1
    # ACL's message (aclGetRecentErrMsg), printed untagged before msame's [ERROR] line, is quoted
    quoted = text.splitlines()
    at = quoted.index("  [ERROR] acl open device 5 failed")
    cause = [line.strip() for line in quoted[at - 4:at]]
    assert cause[0].startswith("EE1001: ") and "rtSetDevice execute failed" in cause[0]
    assert cause[1].startswith("Solution:") and cause[2] == "TraceBack (most recent call last):"


def test_exec_failure_in_file_mode(tmp_path, standins_on_path, standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_MSAME_MODE", "exec_fail")
    with pytest.raises(MsameError, match="Sample process failed"):
        run_msame(standin_om, bins3 / "grid_00000000.bin", tmp_path / "out")


def test_not_an_om_is_caught_when_loading(tmp_path, standins_on_path, bins3):
    fake = tmp_path / "broken.om"
    fake.write_bytes(b"not a model")
    with pytest.raises(MsameError, match="load model from file failed"):
        run_msame(fake, bins3, tmp_path / "out")


@pytest.mark.parametrize("kwargs, message", [
    ({"device": 256}, "device must be an integer in 0..255"),
    ({"device": -1}, "device must be"),
    ({"device": True}, "device must be"),
    ({"loop": 0}, "loop must be an integer in 1..100"),
    ({"loop": 101}, "loop must be"),
    ({"loop": "2"}, "loop must be"),
    ({"channels": 2}, "channels must be one of"),
    ({"msame": "msame; rm -rf /"}, "characters the Ascend tools cannot take"),
])
def test_bad_arguments_are_refused_before_running(tmp_path, standins_on_path, calls, standin_om, bins3,
                                                  kwargs, message):
    with pytest.raises(AscendError, match=re.escape(message)):
        run_msame(standin_om, bins3, tmp_path / "out", **kwargs)
    assert calls("msame") == []


@pytest.mark.parametrize("bad", ["out dir", "out;rm", "out,2", "$(reboot)", "a|b", "-x", "out\n", "o`id`"])
def test_paths_with_metacharacters_are_refused(tmp_path, standins_on_path, calls, standin_om, bins3, bad):
    with pytest.raises(AscendError, match="cannot take safely"):
        run_msame(standin_om, bins3, tmp_path / bad)
    assert calls("msame") == []


def test_missing_model_input_and_tool(tmp_path, standins_on_path, standin_om, bins3):
    with pytest.raises(AscendError, match="not found"):
        run_msame(tmp_path / "none.om", bins3, tmp_path / "out")
    with pytest.raises(AscendError, match="no \\*.bin files"):
        (tmp_path / "empty").mkdir()
        run_msame(standin_om, tmp_path / "empty", tmp_path / "out")
    with pytest.raises(AscendError, match="msame not found"):
        run_msame(standin_om, bins3, tmp_path / "out", msame=tmp_path / "no-msame")


def test_wrong_input_size_is_refused(tmp_path, standins_on_path, standin_om):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.bin").write_bytes(b"\0" * 100)
    with pytest.raises(AscendError, match="not 28,800 bytes"):
        run_msame(standin_om, tmp_path / "in", tmp_path / "out")


def test_discovery_prefers_the_printed_line_over_several_folders(tmp_path):
    from cgan.ascend.msame import _discover

    for name in ("profiler", "20211113_073952"):
        (tmp_path / name).mkdir()
    lines = ["[INFO] create model output success", f"{tmp_path}/20211113_073952"]
    assert _discover(lines, tmp_path)[0] == tmp_path / "20211113_073952"
    found, how = _discover(lines[:1], tmp_path)
    assert found is None and "2 folders" in how


# --- [ERROR] lines that are not failures (msame at 9d6da90: teardown, unload, CANN's own log) ---

@pytest.mark.parametrize("env, reason", [
    ({"STANDIN_MSAME_TEARDOWN_FAIL": "stream,finalize"}, "teardown after 'Execute sample success'"),
    ({"STANDIN_MSAME_TEARDOWN_FAIL": "context,device"}, "teardown after 'Execute sample success'"),
    ({"STANDIN_MSAME_UNLOAD_FAIL": "1"}, "printed after the outputs were written"),
])
def test_error_lines_that_are_not_failures_are_warnings(tmp_path, standins_on_path, standin_om,
                                                        upstream_onnx, bins3, monkeypatch, caplog, env, reason):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    lines = []
    with caplog.at_level("WARNING", logger="cgan.ascend.msame"):
        run = run_msame(standin_om, bins3, tmp_path / "out", channels=1, on_line=lines.append)
    printed = [line for line in lines if "[ERROR]" in line]
    assert len(printed) == (1 if "UNLOAD" in str(env) else 2)  # the stand-in really printed them
    assert len(run.outputs) == 3
    np.testing.assert_allclose(read_output_bin(run.outputs[2]),
                               reference(upstream_onnx, bins3 / "grid_00000002.bin"), atol=1e-6)
    assert [w for w in run.warnings if w.startswith("[ERROR]")] == printed
    assert any(w.startswith("EE9999: ") for w in run.warnings)  # ACL's message kept with them
    perf = json.loads((run.output_dir / "perf.json").read_text())
    noted = [n for n in perf["notes"] if n.startswith("msame printed an [ERROR] line that is not a failure")]
    assert len(noted) == len(printed) and all(reason in n for n in noted)
    assert perf["tool"]["msame_error_lines_not_failures"] == str(len(printed))
    log = (run.output_dir / "msame.log").read_text()
    trailer = [line for line in log.splitlines() if line.startswith("# cgan: not a failure (" + reason)]
    assert [line.rsplit(": ", 1)[-1] for line in trailer] == printed
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == len(printed)


def test_a_verdict_before_the_success_line_still_fails_with_teardown_noise(tmp_path, standins_on_path,
                                                                           standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_MSAME_MODE", "output_error")
    monkeypatch.setenv("STANDIN_MSAME_TEARDOWN_FAIL", "device")
    with pytest.raises(MsameError) as info:
        run_msame(standin_om, bins3, tmp_path / "out", channels=1)
    text = str(info.value)
    assert "[ERROR] aclrtMemcpy failed" in text.split("also printed")[0]
    assert "[ERROR] reset device failed" in text.split("also printed")[1]
    assert "[ERROR] reset device failed" not in info.value.error_lines
    assert list((tmp_path / "out").iterdir()) == []


def test_cann_stdout_logging_is_switched_off_for_msame(tmp_path, standins_on_path, calls, standin_om, bins3):
    env = dict(os.environ, ASCEND_SLOG_PRINT_TO_STDOUT="1", ASCEND_LOG_PRINT_TO_STDOUT="1")
    run = run_msame(standin_om, bins3, tmp_path / "out", env=env)
    assert calls("msame")[0]["cann_stdout"] == {}  # msame's process did not get them
    assert "ASCEND_SLOG_PRINT_TO_STDOUT cleared for msame" in " ".join(run.perf.notes)
    assert run.warnings == [] and "RUNTIME(" not in run.log_path.read_text()


def test_the_standin_prints_cann_error_logs_when_asked(tmp_path, standins_on_path, standin_om, bins3):
    """The trap the cleared variable avoids, and how the lines are told apart if they come anyway."""
    import subprocess

    from cgan.ascend.msame_log import classify_errors

    proc = subprocess.run(["msame", "--model", str(standin_om), "--input", str(bins3), "--output",
                           str(tmp_path / "o")], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, ASCEND_SLOG_PRINT_TO_STDOUT="1"))
    lines = proc.stdout.splitlines()
    cann = [line for line in lines if line.startswith("[ERROR] RUNTIME(")]
    assert proc.returncode == 0 and len(cann) == 1
    errors = classify_errors(lines)
    assert errors.verdicts == [] and errors.warnings == cann


def test_bin_in_the_output_root_does_not_switch_msame_to_file_mode(tmp_path, standins_on_path, calls,
                                                                   standin_om, bins3):
    root = tmp_path / "nightly.bins" / "out"
    run = run_msame(standin_om, bins3, root)
    assert len(run.outputs) == 3 and run.output_dir.parent == root
    argv = calls("msame")[0]["argv"]
    assert argv[argv.index("--input") + 1] == "../in" and ".bin" not in argv[argv.index("--input") + 1]


def test_the_standin_applies_msames_bin_substring_rule(tmp_path, standins_on_path, standin_om, bins3):
    import shutil
    import subprocess

    folder = tmp_path / "nightly.bins" / "in"
    shutil.copytree(bins3, folder)
    proc = subprocess.run(["msame", "--model", str(standin_om), "--input", str(folder), "--output",
                           str(tmp_path / "o")], cwd=tmp_path, capture_output=True, text=True)
    assert "[ERROR] get pic device buffer failed,index is 0" in proc.stdout and proc.returncode == 1
    assert not list((tmp_path / "o").rglob("*.bin"))


# --- device ids: the Device column of npu-smi info, not the NPU column ---

def test_devices_are_checked_against_npu_smis_device_column(tmp_path, standins_on_path, calls,
                                                            standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_NPU_SMI_SAMPLE", "atlas300_310_x8.txt")  # NPU 2048/2049, devices 0..7
    run = run_msame(standin_om, bins3, tmp_path / "out", device=7)
    assert len(run.outputs) == 3
    monkeypatch.setenv("STANDIN_NPU_SMI_SAMPLE", "310p3_x2.txt")  # devices 0, 1
    with pytest.raises(AscendError, match=r"device 7 is not an ACL device of this process .*: its devices are "
                                          r"0=bus-0000-82-00.0-chip0 \(310P3, OK\), 1=bus-0000-89-00.0-chip0"):
        run_msame(standin_om, bins3, tmp_path / "out", device=7)
    monkeypatch.setenv("STANDIN_NPU_SMI_SAMPLE", "atlas300_310_x8.txt")
    with pytest.raises(AscendError, match="the Device column of `npu-smi info`.*not the NPU column"):
        run_msame(standin_om, bins3, tmp_path / "out", device=2048)
    assert len(calls("msame")) == 1  # refused before msame ran


def test_an_npu_id_that_is_not_a_device_is_named_as_such(tmp_path, standins_on_path, standin_om, bins3,
                                                          monkeypatch):
    sample = (STANDINS / "npu_smi_samples" / "310p3_x2.txt").read_text().replace("| 1       310P3", "| 9       310P3")
    (tmp_path / "x.txt").write_text(sample)
    monkeypatch.setenv("STANDIN_NPU_SMI_SAMPLE", str(tmp_path / "x.txt"))  # an absolute path works too
    with pytest.raises(AscendError, match="9 is in npu-smi's NPU column, a card number"):
        run_msame(standin_om, bins3, tmp_path / "out", device=9)


def test_without_npu_smi_the_device_is_not_checked(tmp_path, standins_on_path, standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_NPU_SMI_FAIL", "1")
    run = run_msame(standin_om, bins3, tmp_path / "out", device=6)
    assert ("no NPU inventory (no device node, npu-smi or CGAN_NPU_DEVICES): device id not checked before msame"
            in run.perf.notes)


def test_an_om_built_for_another_architecture_is_refused(tmp_path, standins_on_path, calls, standin_om, bins3):
    from cgan.ascend.target import host_target

    other = "linux_aarch64" if host_target() != "linux_aarch64" else "linux_x86_64"
    om = tmp_path / f"cgan_{other}.om"
    om.write_bytes(standin_om.read_bytes())
    with pytest.raises(AscendError, match=f"built by atc for {other} and cannot run on this {host_target()}"):
        run_msame(om, bins3, tmp_path / "out")
    assert calls("msame") == []
    here = tmp_path / f"cgan_{host_target()}.om"
    here.write_bytes(standin_om.read_bytes())
    assert len(run_msame(here, bins3, tmp_path / "out").outputs) == 3


def test_batches_hand_each_batch_over_while_msame_computes_the_next(tmp_path, standins_on_path, calls, standin_om,
                                                                    monkeypatch):
    """run_msame_batches: one msame process per batch, the outputs handed over (in grid order, on
    a thread of its own) while msame runs; one result folder, log and perf."""
    import threading
    import time

    from cgan.ascend.msame import run_msame_batches
    from cgan.recipe.bins import write_bins

    monkeypatch.setenv("STANDIN_MSAME_DELAY_S", "0.3")  # each execute takes 0.3 s
    write_bins(tmp_path / "bins", 5, seed=7)
    single = run_msame(standin_om, tmp_path / "bins", tmp_path / "single", channels=1)
    seen: list[tuple[str, float, str]] = []

    def on_output(path, samples):
        seen.append((path.name, time.monotonic(), threading.current_thread().name))
        assert samples.shape == (100, 1, 28, 28)

    started = time.monotonic()
    run = run_msame_batches(standin_om, tmp_path / "bins", tmp_path / "out", on_output=on_output, batch_grids=2,
                            channels=1)
    msame_calls = calls("msame")[1:]  # after the single run's
    assert len(msame_calls) == 3  # batches of 2, 2, 1
    assert [name for name, _, _ in seen] == [f"grid_0000000{i}_output_0.bin" for i in range(5)]
    assert all(thread.startswith("msame-hand-off") for _, _, thread in seen)
    # the first batch was handed over before the last batch's msame ended (it was computing then)
    assert seen[0][1] - started < time.monotonic() - started - 0.3
    assert [p.name for p in run.outputs] == [p.name for p in single.outputs]
    assert all(p.parent == run.output_dir and p.read_bytes() == q.read_bytes()
               for p, q in zip(run.outputs, single.outputs, strict=True))
    perf = json.loads((run.output_dir / "perf.json").read_text())
    # batches of 2, 2, 1: each process of 2 calls excludes its first as warm-up
    assert perf["grids"] == 5 and perf["calls"] == 3 and perf["warmup_calls"] == 2
    assert any("3 msame process(es) of at most 2 bins" in n for n in perf["notes"])
    log = (run.output_dir / "msame.log").read_text()
    assert log.count("# cgan: msame batch") == 3 and log.count("Execute sample success") == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [run.output_dir.name]  # nothing else left


def test_outputs_are_handed_over_while_their_own_batch_still_runs(tmp_path, standins_on_path, standin_om,
                                                                  monkeypatch):
    """Within one msame process the NPU does not wait for a batch to end: each output is handed
    over once msame has written it whole, while msame computes the next grids of the same batch."""
    import time

    from cgan.ascend.msame import run_msame_batches
    from cgan.recipe.bins import write_bins

    monkeypatch.setenv("STANDIN_MSAME_DELAY_S", "0.4")  # each execute takes 0.4 s
    write_bins(tmp_path / "bins", 4, seed=3)
    seen: list[tuple[str, float]] = []
    run = run_msame_batches(standin_om, tmp_path / "bins", tmp_path / "out", batch_grids=4, channels=1,
                            on_output=lambda path, samples: seen.append((path.name, time.monotonic())))
    ended = time.monotonic()
    assert [name for name, _ in seen] == [f"grid_0000000{i}_output_0.bin" for i in range(4)]
    # one batch of 4 executes of 0.4 s: the first grid was handed over while 2 or more were still to compute
    assert ended - seen[0][1] > 0.7, (ended, seen)
    assert [p.name for p in run.outputs] == [name for name, _ in seen]
    assert all(p.parent == run.output_dir and p.stat().st_size == 313_600 for p in run.outputs)


def test_a_failing_batch_fails_the_run(tmp_path, standins_on_path, standin_om, monkeypatch):
    from cgan.ascend.msame import run_msame_batches
    from cgan.recipe.bins import write_bins

    write_bins(tmp_path / "bins", 4, seed=7)
    monkeypatch.setenv("STANDIN_MSAME_FAIL_FILE", "grid_00000003.bin")  # the second batch's second file
    with pytest.raises(MsameError):
        run_msame_batches(standin_om, tmp_path / "bins", tmp_path / "out", on_output=lambda p, s: None,
                          batch_grids=2, channels=1)


def test_the_timed_standin_sleeps_per_call_and_computes_its_one_output_once(tmp_path, standins_on_path, calls,
                                                                            standin_om, bins3, monkeypatch):
    """STANDIN_MSAME_TIMED_MS (make bench's simulated NPU): each call takes about that long; every
    output is the first input's; the first process keeps that output beside the om, and a later
    process writes what is kept (it loads no ONNX Runtime)."""
    import time

    monkeypatch.setenv("STANDIN_MSAME_TIMED_MS", "40")
    started = time.monotonic()
    first = run_msame(standin_om, bins3, tmp_path / "first", channels=1)
    assert time.monotonic() - started >= 2 * 0.040  # the 2nd and 3rd calls slept (the 1st computed)
    data = [p.read_bytes() for p in first.outputs]
    assert data[0] == data[1] == data[2]
    np.testing.assert_allclose(read_output_bin(first.outputs[0]),
                               read_output_bin(run_msame(standin_om, bins3 / "grid_00000000.bin",
                                                         tmp_path / "plain").outputs[0]), atol=1e-6)
    cache = json.loads((standin_om.parent / f"{standin_om.name}.standin-timed.json").read_text())
    assert cache["in_bytes"] == (bins3 / "grid_00000000.bin").stat().st_size
    kept = standin_om.parent / f"{standin_om.name}.standin-timed.bin"
    assert kept.read_bytes() == data[0]
    kept.write_bytes(bytes(len(data[0])))  # a later process writes what is kept, computing nothing
    again = run_msame(standin_om, bins3, tmp_path / "again", channels=1)
    assert [p.read_bytes() for p in again.outputs] == [bytes(len(data[0]))] * 3


def test_the_timed_standin_computes_the_listed_grids_for_real_and_copies_the_others(
        tmp_path, standins_on_path, upstream_onnx, bins3, monkeypatch):
    """STANDIN_MSAME_TIMED_REAL (make bench's fleet section): the grids it lists (a run's parity and
    label samples) get their true outputs, every other grid the one kept output; a process that
    has that output kept computes only the listed grids (ONNX Runtime loaded for them alone)."""
    import shutil

    om = tmp_path / "om" / "cgan.om"  # its own om: the timed stand-in keeps its output beside it
    om.parent.mkdir()
    shutil.copyfile(upstream_onnx, om)
    listed = tmp_path / "real.json"
    listed.write_text(json.dumps([2]))
    monkeypatch.setenv("STANDIN_MSAME_TIMED_MS", "5")
    monkeypatch.setenv("STANDIN_MSAME_TIMED_REAL", str(listed))
    first = run_msame(om, bins3, tmp_path / "first", channels=1)
    outs = [read_output_bin(p) for p in first.outputs]
    truth = [reference(upstream_onnx, bins3 / f"grid_0000000{g}.bin") for g in range(3)]
    np.testing.assert_allclose(outs[0], truth[0], atol=1e-6)  # the first call computes (the kept one)
    assert first.outputs[1].read_bytes() == first.outputs[0].read_bytes()  # grid 1: a copy
    np.testing.assert_allclose(outs[2], truth[2], atol=1e-6)  # grid 2: listed, computed for real
    assert first.outputs[2].read_bytes() != first.outputs[0].read_bytes()

    kept = om.parent / f"{om.name}.standin-timed.bin"
    kept.write_bytes(bytes(kept.stat().st_size))  # a later process: copies of what is kept, grid 2 real
    again = run_msame(om, bins3, tmp_path / "again", channels=1)
    assert [p.read_bytes() for p in again.outputs[:2]] == [kept.read_bytes()] * 2
    np.testing.assert_allclose(read_output_bin(again.outputs[2]), truth[2], atol=1e-6)
    single = run_msame(om, bins3 / "grid_00000002.bin", tmp_path / "single", channels=1)  # file input too
    np.testing.assert_allclose(read_output_bin(single.outputs[0]), truth[2], atol=1e-6)


# msame's stdout is C stdio's: fully buffered into a pipe. The stand-in is as unkind (4096-byte
# blocks, flushed at exit, lost on a kill or a crash) unless stdbuf's _STDBUF_O says otherwise.
needs_stdbuf = pytest.mark.skipif(shutil.which("stdbuf") is None, reason="GNU stdbuf (coreutils) not installed")


@needs_stdbuf
def test_the_standin_loses_its_unflushed_tail_when_it_crashes_unless_line_buffered(tmp_path, standins_on_path,
                                                                                    standin_om, bins3, monkeypatch):
    import subprocess

    monkeypatch.setenv("STANDIN_MSAME_CRASH", "1")
    argv = ["msame", "--model", str(standin_om), "--input", str(bins3), "--output", str(tmp_path / "o")]
    bare = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lined = subprocess.run(["stdbuf", "-oL", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bare.returncode == lined.returncode == -signal.SIGSEGV
    assert bare.stdout == ""  # its lines were still in the 4 KB buffer
    assert lined.stdout.splitlines()[-1].startswith("[INFO] start to process file:")


@needs_stdbuf
def test_a_crashed_msame_shows_its_last_lines(tmp_path, standins_on_path, calls, standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_MSAME_CRASH", "1")
    lines = []
    with pytest.raises(MsameError, match="killed by signal SIGSEGV") as info:
        run_msame(standin_om, bins3, tmp_path / "out", on_line=lines.append)
    assert calls("msame")[0]["stdbuf_o"] == "L"  # run under stdbuf -oL
    text = str(info.value)
    assert "msame's last " in text and "  [INFO] start to process file:../in/grid_00000000.bin" in text
    assert lines[-1] == "[INFO] start to process file:../in/grid_00000000.bin"  # in the task log too


@needs_stdbuf
def test_a_timed_out_msame_shows_its_last_lines(tmp_path, standins_on_path, standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_MSAME_DELAY_S", "120")  # the first execute hangs
    lines = []
    with pytest.raises(MsameError, match="did not finish within 8 s") as info:
        run_msame(standin_om, bins3, tmp_path / "out", on_line=lines.append, timeout_s=8)
    tail = str(info.value).split("msame's last ", 1)[1]
    assert "[INFO] create model output success" in tail
    assert "[INFO] start to process file:../in/grid_00000000.bin" in tail
    assert "[INFO] start to process file:../in/grid_00000000.bin" in lines


@needs_stdbuf
def test_msame_lines_arrive_as_they_are_printed(tmp_path, standins_on_path, calls, standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_MSAME_DELAY_S", "0.5")  # each execute
    seen = []
    run_msame(standin_om, bins3, tmp_path / "out", on_line=lambda line: seen.append((time.monotonic(), line)))
    assert calls("msame")[0]["stdbuf_o"] == "L"
    at = {line: t for t, line in seen}
    first = at["[INFO] start to process file:../in/grid_00000000.bin"]
    third = at["[INFO] start to process file:../in/grid_00000002.bin"]
    assert third - first >= 0.9  # two executes apart: not one burst at exit


def test_without_stdbuf_msame_runs_and_the_log_says_so(tmp_path, clean_env, standin_om, bins3, caplog):
    from tests.standins.fixtures import VENV_BIN

    assert not (VENV_BIN / "stdbuf").exists()
    clean_env.setenv("PATH", str(VENV_BIN))  # python3 for the stand-in, and no stdbuf
    with caplog.at_level("WARNING", logger="cgan.ascend.msame"):
        run = run_msame(standin_om, bins3, tmp_path / "out", msame=str(STANDINS / "msame"), npu_smi=None)
    assert any(note.startswith("stdbuf not found on msame's PATH") for note in run.perf.notes)
    assert any("stdbuf not found" in r.getMessage() for r in caplog.records)
    assert "Execute sample success" in run.log_path.read_text()  # flushed at exit


def test_a_null_acl_message_is_named_with_what_it_silenced(tmp_path, standins_on_path, standin_om, bins3,
                                                           monkeypatch):
    """aclGetRecentErrMsg() null: `cout << nullptr` silences msame's later cout lines (here the
    'Inference time' of the next two files); printf lines (averages, success) still come."""
    monkeypatch.setenv("STANDIN_MSAME_NULL_ACL_MSG", "1")
    monkeypatch.setenv("STANDIN_MSAME_MODE", "output_error")  # aclrtMemcpy fails on every output
    lines = []
    with pytest.raises(MsameError) as info:
        run_msame(standin_om, bins3, tmp_path / "out", channels=1, on_line=lines.append)
    assert len([line for line in lines if line.startswith("Inference time")]) == 1  # the stand-in silenced 2
    assert any(line.startswith("Inference average time") for line in lines) and printed_success(lines)
    text = str(info.value)
    assert "`[ERROR] aclrtMemcpy failed, ret[507899]` came without ACL's message" in text
    assert "aclGetRecentErrMsg() returned null" in text and "2 execute(s) after it printed no 'Inference time'" in text
    assert "~/ascend/log" in text


def test_a_null_acl_message_in_a_good_run_is_noted_not_failed(tmp_path, standins_on_path, standin_om, bins3,
                                                              monkeypatch, caplog):
    monkeypatch.setenv("STANDIN_MSAME_NULL_ACL_MSG", "1")
    monkeypatch.setenv("STANDIN_MSAME_UNLOAD_FAIL", "1")  # after the outputs: not a failure
    with caplog.at_level("WARNING", logger="cgan.ascend.msame"):
        run = run_msame(standin_om, bins3, tmp_path / "out", channels=1)
    assert len(run.outputs) == 3 and run.warnings == ["[ERROR] unload model failed, modelId is 1"]
    noted = [n for n in run.perf.notes if n.startswith("not a failure: msame's `[ERROR] unload model failed")]
    assert noted and "aclGetRecentErrMsg() returned null" in noted[0]
    assert any("came without ACL's message" in r.getMessage() for r in caplog.records)


def test_float16_outputs_are_named_with_the_fix(tmp_path, standins_on_path, standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_MSAME_FP16", "outputs")  # an om converted without --output_type=FP32
    with pytest.raises(MsameError, match=r"grid_00000000_output_0.bin has 156,800 bytes, expected 313,600: "
                       r"the om's outputs are float16 \(156,800 bytes, half of the 313,600 float32 bytes\).*"
                       r"reconvert it with atc --output_type=FP32"):
        run_msame(standin_om, bins3, tmp_path / "out", channels=1)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_half_written_float32_output_is_not_called_float16(tmp_path, standins_on_path, standin_om, bins3,
                                                             monkeypatch):
    monkeypatch.setenv("STANDIN_MSAME_MODE", "short_output")  # the first half of the float32 bytes
    with pytest.raises(MsameError, match="has 156,800 bytes, expected 313,600") as info:
        run_msame(standin_om, bins3, tmp_path / "out", channels=1)
    assert "float16" not in str(info.value)
