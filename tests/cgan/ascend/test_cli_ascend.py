"""`cgan convert` and `cgan infer --backend msame`, run as a user runs them, with the stand-ins."""

import json
import subprocess
import sys

import pytest

CGAN = [sys.executable, "-m", "cgan"]


def cgan(*args):
    return subprocess.run([*CGAN, *map(str, args)], capture_output=True, text=True, timeout=300)


def ok(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def failed(proc, command, *needles):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"cgan {command}: error:") or \
        f"cgan {command}: error:" in proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    return proc.stderr


def test_convert_twice_second_is_a_cache_hit(tmp_path, fake_toolkit, calls, upstream_onnx):
    args = ["convert", "--onnx", upstream_onnx, "--soc-version", "Ascend310P3", "--toolkit-home",
            fake_toolkit, "--cache", tmp_path / "cache", "--json"]
    first = ok(cgan(*args, "--out", tmp_path / "a"))
    assert not first["cache_hit"] and first["om"] == str(tmp_path / "a" / "cgan.om")
    assert "ATC run success" in (tmp_path / "a" / "atc.log").read_text()
    second = ok(cgan(*args, "--out", tmp_path / "b"))
    assert second["cache_hit"] and second["cache_key"] == first["cache_key"]
    assert len([c for c in calls("atc") if c["argv"] != ["--version"]]) == 1
    assert (tmp_path / "cache" / "atc-cache" / first["cache_key"] / "model.om").is_file()


def test_convert_streams_atc_output_to_stderr(tmp_path, fake_toolkit, upstream_onnx):
    proc = cgan("convert", "--onnx", upstream_onnx, "--soc-version", "Ascend910B1", "--out", tmp_path,
                "--toolkit-home", fake_toolkit, "--precision-mode", "must_keep_origin_dtype")
    assert proc.returncode == 0, proc.stderr
    assert "ATC start working now" in proc.stderr and "wrote " in proc.stdout


def test_convert_soc_auto_from_npu_smi(tmp_path, fake_toolkit, standins_on_path, upstream_onnx, monkeypatch):
    monkeypatch.setenv("STANDIN_NPU_SMI_SAMPLE", "910b4_x2.txt")
    out = ok(cgan("convert", "--onnx", upstream_onnx, "--soc-version", "auto", "--out", tmp_path,
                  "--toolkit-home", fake_toolkit, "--json"))
    assert "--soc_version=Ascend910B4" in out["flags"]


@pytest.mark.parametrize("extra, needles", [
    (["--soc-version", "Ascend310;reboot"], ["not an Ascend SoC name"]),
    (["--soc-version", "Ascend310", "--precision-mode", "fast"], ["precision_mode 'fast'"]),
])
def test_convert_bad_values_exit_2_before_atc(tmp_path, fake_toolkit, calls, upstream_onnx, extra, needles):
    failed(cgan("convert", "--onnx", upstream_onnx, "--out", tmp_path, "--toolkit-home", fake_toolkit, *extra),
           "convert", *needles)
    assert calls("atc") == []


def test_convert_without_toolkit(tmp_path, clean_env, upstream_onnx):
    failed(cgan("convert", "--onnx", upstream_onnx, "--soc-version", "Ascend310", "--out", tmp_path,
                "--toolkit-home", tmp_path / "none"), "convert", "set_env.sh not found")


def test_convert_atc_failure_quotes_e_codes(tmp_path, fake_toolkit, upstream_onnx, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_MODE", "ecode")
    failed(cgan("convert", "--onnx", upstream_onnx, "--soc-version", "Ascend310", "--out", tmp_path,
                "--toolkit-home", fake_toolkit), "convert", "EZ3003", "E19010")


def test_infer_msame_then_grids(tmp_path, standins_on_path, standin_om, bins3):
    out = ok(cgan("infer", "--backend", "msame", "--model", standin_om, "--input", bins3,
                  "--output", tmp_path / "out", "--device", 1, "--json"))
    assert out["perf"]["backend"] == "msame" and out["perf"]["device"] == "npu:1"
    assert out["perf"]["grids"] == 3
    proc = cgan("grids", "--input", tmp_path / "out", "--out", tmp_path / "grids")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "grids").glob("*.png"))) == 3


def test_infer_msame_exit_zero_failure_exits_2(tmp_path, standins_on_path, standin_om, bins3, monkeypatch):
    monkeypatch.setenv("STANDIN_MSAME_MODE", "output_error")
    failed(cgan("infer", "--backend", "msame", "--model", standin_om, "--input", bins3, "--output", tmp_path),
           "infer", "[ERROR] aclrtMemcpy failed", "EE9999: ", "is missing")


@pytest.mark.parametrize("extra, needles", [
    (["--device", "300"], ["device must be an integer in 0..255"]),
    (["--loop", "101"], ["loop must be an integer in 1..100"]),
    (["--msame", "msame && reboot"], ["cannot take safely"]),
])
def test_infer_msame_bad_values(tmp_path, standins_on_path, calls, standin_om, bins3, extra, needles):
    failed(cgan("infer", "--backend", "msame", "--model", standin_om, "--input", bins3, "--output",
                tmp_path, *extra), "infer", *needles)
    assert calls("msame") == []


def test_infer_msame_needs_a_model(tmp_path, bins3):
    failed(cgan("infer", "--backend", "msame", "--input", bins3, "--output", tmp_path), "infer", "--model X.om")


def test_onnxruntime_backend_still_works(tmp_path, upstream_onnx, bins3):
    out = ok(cgan("infer", "--model", upstream_onnx, "--input", bins3, "--output", tmp_path, "--json"))
    assert out["perf"]["backend"] == "onnxruntime" and out["perf"]["grids"] == 3


def test_help_lists_the_ascend_commands():
    proc = cgan("--help")
    assert "cgan convert" in proc.stdout and "--backend msame" in proc.stdout
    assert cgan("convert", "--help").stdout.startswith("usage: cgan convert")


def test_infer_msame_sources_set_env(tmp_path, fake_toolkit, calls, standin_om, bins3):
    ok(cgan("infer", "--backend", "msame", "--model", standin_om, "--input", bins3, "--output", tmp_path,
            "--toolkit-home", fake_toolkit, "--json"))
    assert calls("msame")[0]["ascend_opp_path"] == f"{fake_toolkit}/latest/opp"


def test_infer_with_ais_bench_through_its_python_api(tmp_path, standin_om, bins3, clean_env):
    """`cgan infer --backend ais_bench`, with the stand-in ais_bench/aclruntime on PYTHONPATH."""
    import os

    from tests.standins.fixtures import STANDINS

    clean_env.setenv("PYTHONPATH", f"{STANDINS / 'ais_bench_api'}{os.pathsep}{os.getcwd()}")
    result = ok(cgan("infer", "--backend", "ais_bench", "--model", standin_om, "--input", bins3,
                     "--output", tmp_path / "out", "--device", 1, "--json"))
    assert result["perf"]["backend"] == "ais_bench" and result["perf"]["device"] == "npu:1"
    assert result["perf"]["calls"] == 3
    clean_env.setenv("PYTHONPATH", os.getcwd())  # no ais_bench installed
    failed(cgan("infer", "--backend", "ais_bench", "--model", standin_om, "--input", bins3,
                "--output", tmp_path / "out2", "--json"), "infer", "'ais_bench' is not installed", "aclruntime-")
