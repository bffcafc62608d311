"""The atc wrapper and the CANN environment, against the stand-in atc (tests/standins/atc)."""

import os
import re
import time

import pytest

from cgan.ascend.atc import (
    ECODE_RE,
    AtcOptions,
    build_argv,
    find_om,
    onnx_input_shape,
    run_atc,
    scan_output,
)
from cgan.ascend.errors import AscendError, AtcError, ToolchainNotFound
from cgan.ascend.toolkit import load_set_env, locate_toolkit, read_toolkit_version
from cgan.ascend.validate import check_soc_version
from tests.standins.fixtures import STANDINS

OPTS = AtcOptions("Ascend310P3")


def real_calls(calls):
    return [c for c in calls("atc") if c["argv"] != ["--version"]]


def test_argv_is_the_recipe_command_without_auto_tune(tmp_path, upstream_onnx):
    shape = onnx_input_shape(upstream_onnx)
    assert shape == "image:100,72"
    argv = build_argv("atc", upstream_onnx, tmp_path / "cgan", OPTS, shape)
    assert argv == [
        "atc", "--framework=5", f"--model={upstream_onnx}", f"--output={tmp_path / 'cgan'}",
        "--input_format=ND", "--input_shape=image:100,72", "--soc_version=Ascend310P3",
        "--output_type=FP32", "--precision_mode=force_fp16", "--log=error",
    ]
    assert not any("auto_tune" in a for a in argv)


def test_dynamic_batch_onnx_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 72])
    y = helper.make_tensor_value_info("output1", TensorProto.FLOAT, ["batch", 72])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["output1"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), tmp_path / "dyn.onnx")
    with pytest.raises(AscendError, match="dynamic or empty shape"):
        onnx_input_shape(tmp_path / "dyn.onnx")


def test_convert_with_set_env_toolkit(tmp_path, fake_toolkit, calls, upstream_onnx, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toolkit = locate_toolkit(fake_toolkit)
    assert toolkit.atc == str(STANDINS / "atc")  # found on the PATH set_env.sh exported
    assert toolkit.version == "7.0.0 (V100R001C15SPC001B220)"
    assert toolkit.version_source.endswith("latest/x86_64-linux/ascend_toolkit_install.info")
    lines = []
    result = run_atc(upstream_onnx, tmp_path / "om", OPTS, toolkit=toolkit, on_line=lines.append)
    assert result.om_path == tmp_path / "om" / "cgan.om"
    assert result.om_path.read_bytes() == upstream_onnx.read_bytes()  # the stand-in's trick
    assert lines[0] == "ATC start working now, please wait for a moment."
    assert any("ATC run success" in line for line in lines) and result.lines == lines
    assert sorted(p.name for p in (tmp_path / "om").iterdir()) == ["cgan.om"]  # no work folder left
    assert not (tmp_path / "fusion_result.json").exists()  # atc's CWD was its own folder
    (call,) = real_calls(calls)
    assert call["cwd"] not in (str(tmp_path), str(tmp_path / "om"))


def test_om_with_linux_arch_suffix_is_found(tmp_path, fake_toolkit, upstream_onnx, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_SUFFIX", "_linux_x86_64")
    result = run_atc(upstream_onnx, tmp_path, OPTS, toolkit=locate_toolkit(fake_toolkit))
    assert result.om_path.name == "cgan_linux_x86_64.om"
    assert any("only on that OS/architecture" in n for n in result.notes)


def test_find_om_ignores_other_names(tmp_path):
    for name in ("cgan.om", "cgan_linux_aarch64.om", "cgan2.om", "cganx_linux_x86_64.om", "cgan.om.part"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_om(tmp_path, "cgan")] == ["cgan.om", "cgan_linux_aarch64.om"]


def test_exit_zero_without_success_line_fails(tmp_path, fake_toolkit, upstream_onnx, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_MODE", "no_success")  # the om is even written
    with pytest.raises(AtcError, match="exited 0 but never printed 'ATC run success'") as info:
        run_atc(upstream_onnx, tmp_path / "om", OPTS, toolkit=locate_toolkit(fake_toolkit))
    assert info.value.exit_code == 0
    assert list((tmp_path / "om").iterdir()) == []  # nothing published


def test_e_codes_are_named_and_quoted(tmp_path, fake_toolkit, upstream_onnx, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_MODE", "ecode")
    with pytest.raises(AtcError) as info:
        run_atc(upstream_onnx, tmp_path / "om", OPTS, toolkit=locate_toolkit(fake_toolkit))
    err = info.value
    assert err.codes == ["EZ3003", "E19010"] and err.exit_code == 1
    text = str(err)
    assert "exit code 1" in text and "[EZ3003, E19010]" in text
    assert "  EZ3003: No supported Ops kernel" in text and "  ATC run failed" in text
    # the cause and the fix atc prints, indented, under each E-code are quoted with it
    quoted = text.splitlines()
    at = quoted.index(next(line for line in quoted if "EZ3003:" in line))
    assert quoted[at + 1].strip().startswith("Possible Cause: The operator is not supported")
    assert quoted[at + 2].strip().startswith("Solution: 1. Check that the OPP component")
    assert quoted[at + 3].strip() == "TraceBack (most recent call last):"
    assert any(line.strip().startswith("Solution:") for line in quoted[quoted.index(
        next(line for line in quoted if "E19010:" in line)):])


def test_exit_zero_with_errors_fails(tmp_path, fake_toolkit, upstream_onnx, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_MODE", "exit0_fail")
    with pytest.raises(AtcError, match="never printed") as info:
        run_atc(upstream_onnx, tmp_path / "om", OPTS, toolkit=locate_toolkit(fake_toolkit))
    assert info.value.codes == ["EZ3003", "E19010"]


def test_success_line_without_om_fails(tmp_path, fake_toolkit, upstream_onnx, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_MODE", "no_om")
    with pytest.raises(AtcError, match=r"wrote no cgan\*\.om"):
        run_atc(upstream_onnx, tmp_path / "om", OPTS, toolkit=locate_toolkit(fake_toolkit))


def test_soc_unknown_to_atc_quotes_e10001(tmp_path, fake_toolkit, upstream_onnx):
    with pytest.raises(AtcError) as info:
        run_atc(upstream_onnx, tmp_path, AtcOptions("Ascend999"), toolkit=locate_toolkit(fake_toolkit))
    assert info.value.codes == ["E10001"] and "parameter [--soc_version]" in str(info.value)


def test_output_is_streamed_while_atc_runs(tmp_path, fake_toolkit, upstream_onnx, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_MODE", "slow")
    stamps = []
    start = time.monotonic()
    run_atc(upstream_onnx, tmp_path, OPTS, toolkit=locate_toolkit(fake_toolkit),
            on_line=lambda line: stamps.append((time.monotonic() - start, line)))
    end = time.monotonic() - start
    first = stamps[0]
    assert first[1].startswith("ATC start working")
    assert end - first[0] >= 1.5, "the first line arrived only when atc ended"


def test_timeout_stops_atc(tmp_path, fake_toolkit, upstream_onnx, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_MODE", "slow")
    t0 = time.monotonic()
    with pytest.raises(AtcError, match="did not finish within 0.5 s"):
        run_atc(upstream_onnx, tmp_path, OPTS, toolkit=locate_toolkit(fake_toolkit), timeout_s=0.5)
    assert time.monotonic() - t0 < 1.8


@pytest.mark.parametrize("soc", ["Ascend310", "Ascend310P3", "Ascend910B1", "Ascend310B4", "Ascend910A",
                                 "Ascend910B2C", "Ascend910B4-1", "Ascend910_9391", "Ascend910ProB"])
def test_good_soc_versions(soc):
    assert check_soc_version(soc) == soc


@pytest.mark.parametrize("soc", ["", "ascend310", "Ascend", "310P3", "Ascend310 P3", "Ascend310;id",
                                 "Ascend310P3\n", "Ascend310$(id)", "--soc_version=Ascend310", None, 310])
def test_bad_soc_versions_are_refused_before_atc(tmp_path, fake_toolkit, calls, upstream_onnx, soc):
    with pytest.raises(AscendError, match="not an Ascend SoC name"):
        run_atc(upstream_onnx, tmp_path, AtcOptions(soc), toolkit=locate_toolkit(fake_toolkit))
    assert real_calls(calls) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"precision_mode": "fp16; id"}, "precision_mode"),
    ({"precision_mode": "FORCE_FP16"}, "precision_mode"),
    ({"log_level": "verbose"}, "log level"),
])
def test_bad_options_are_refused(tmp_path, fake_toolkit, calls, upstream_onnx, kwargs, message):
    with pytest.raises(AscendError, match=message):
        run_atc(upstream_onnx, tmp_path, AtcOptions("Ascend310", **kwargs), toolkit=locate_toolkit(fake_toolkit))
    assert real_calls(calls) == []


@pytest.mark.parametrize("where", ["onnx", "out", "name"])
def test_paths_with_metacharacters_are_refused(tmp_path, fake_toolkit, calls, upstream_onnx, where):
    bad = tmp_path / "a b;c"
    bad.mkdir()
    onnx = upstream_onnx
    if where == "onnx":
        onnx = bad / "m.onnx"
        onnx.write_bytes(upstream_onnx.read_bytes())
    with pytest.raises(AscendError):
        run_atc(onnx, bad if where == "out" else tmp_path, OPTS, toolkit=locate_toolkit(fake_toolkit),
                name="x$(id)" if where == "name" else "cgan")
    assert real_calls(calls) == []


@pytest.mark.parametrize("char", ["+", "=", "@", "%"])
def test_paths_atc_would_refuse_are_refused_before_atc(tmp_path, fake_toolkit, calls, upstream_onnx, char):
    """atc matches the realpath of --model/--output against ^[\u4e00-\u9fa5A-Za-z0-9./_-]+$ (E10001)."""
    odd = tmp_path / f"nightly{char}1"
    odd.mkdir()
    (odd / "m.onnx").write_bytes(upstream_onnx.read_bytes())
    toolkit = locate_toolkit(fake_toolkit)
    with pytest.raises(AscendError, match=re.escape(f"characters atc refuses ({char})")):
        run_atc(odd / "m.onnx", tmp_path / "om", OPTS, toolkit=toolkit)
    with pytest.raises(AscendError, match="characters atc refuses"):
        run_atc(upstream_onnx, odd / "om", OPTS, toolkit=toolkit)
    link = tmp_path / "clean"
    link.symlink_to(odd)  # the name is clean, the realpath atc checks is not
    with pytest.raises(AscendError, match="real path"):
        run_atc(link / "m.onnx", tmp_path / "om", OPTS, toolkit=toolkit)
    assert real_calls(calls) == []


def test_standin_atc_refuses_those_paths_late_like_atc(tmp_path, fake_toolkit, upstream_onnx):
    """What the early check saves: atc itself fails with E10001 after starting."""
    from cgan.ascend.proc import run_streaming

    odd = tmp_path / "a+b"
    odd.mkdir()
    toolkit = locate_toolkit(fake_toolkit)
    argv = build_argv(toolkit.atc, upstream_onnx, odd / "cgan", OPTS, "image:100,72")
    result = run_streaming(argv, cwd=tmp_path, env=toolkit.env)
    ok, codes, errors = scan_output(result.lines)
    assert result.exit_code == 1 and not ok and codes == ["E10001"] and "[--output]" in errors[1]
    assert errors[2].strip() == "Solution: Try again with a valid argument."


def test_missing_set_env_is_said_clearly(tmp_path, clean_env):
    with pytest.raises(ToolchainNotFound) as info:
        locate_toolkit(tmp_path / "nowhere")
    text = str(info.value)
    assert f"set_env.sh not found at {tmp_path / 'nowhere' / 'set_env.sh'}" in text
    assert "--toolkit-home" in text and "--atc-from-path" in text


def test_atc_from_path_when_configured(tmp_path, standins_on_path, upstream_onnx, monkeypatch):
    monkeypatch.setenv("ASCEND_OPP_PATH", "/opt/opp")  # a host whose environment is already set
    toolkit = locate_toolkit(tmp_path / "nowhere", atc_from_path=True)
    assert toolkit.atc == str(STANDINS / "atc")
    assert toolkit.version == "ATC version 7.0.0 (stand-in)"  # no version file: `atc --version`
    assert run_atc(upstream_onnx, tmp_path, OPTS, toolkit=toolkit).om_path.is_file()


def test_without_the_cann_environment_the_standin_atc_fails_like_atc(tmp_path, standins_on_path, upstream_onnx):
    toolkit = locate_toolkit(tmp_path / "nowhere", atc_from_path=True)
    with pytest.raises(AtcError, match="exit code 127"):
        run_atc(upstream_onnx, tmp_path, OPTS, toolkit=toolkit)


def test_set_env_is_sourced_without_a_shell_string(fake_toolkit, tmp_path):
    env = load_set_env(fake_toolkit / "set_env.sh")
    assert env["ASCEND_OPP_PATH"] == f"{fake_toolkit}/latest/opp"
    assert env["PATH"].split(os.pathsep)[0] == str(STANDINS)
    assert env["CGAN_MULTILINE"] == "line one\nline two"  # env -0 keeps newlines
    assert not any("chatter" in v for v in env.values())
    evil = tmp_path / "x'$(touch pwned)'"
    evil.mkdir()
    (evil / "set_env.sh").write_text("export A=1\n")
    with pytest.raises(AscendError, match="cannot take safely"):
        load_set_env(evil / "set_env.sh")
    assert not (tmp_path / "pwned").exists()


def test_failing_set_env_is_reported(tmp_path, clean_env):
    (tmp_path / "set_env.sh").write_text("echo broken >&2\nfalse\n")
    with pytest.raises(ToolchainNotFound, match="sourcing .* failed .*broken"):
        load_set_env(tmp_path / "set_env.sh")


def test_version_fallbacks(tmp_path, standins_on_path, monkeypatch):
    cfg = tmp_path / "home" / "latest" / "version.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("# version: 1.0\nruntime_running_version=[7.0.0.5.242:7.0.0]\n")
    assert read_toolkit_version(tmp_path / "home", {}) == (
        "runtime_running_version=[7.0.0.5.242:7.0.0]", str(cfg))
    atc = str(STANDINS / "atc")
    env = dict(os.environ)
    assert read_toolkit_version(tmp_path / "none", env, atc)[0] == "ATC version 7.0.0 (stand-in)"
    env["STANDIN_ATC_VERSION"] = "no number here"
    assert read_toolkit_version(tmp_path / "none", env, atc) == ("unknown", "none")


def test_scan_output_ignores_warnings():
    ok, codes, errors = scan_output(["ATC run success, welcome to the next use.",
                                     "W11001: Op [Gemm_0] does not hit the high-priority ..."])
    assert ok and codes == [] and errors == []
    ok, codes, errors = scan_output(["ERROR: unknown command line flag 'auto_tune_mode'"])
    assert not ok and errors == ["ERROR: unknown command line flag 'auto_tune_mode'"]


def test_scan_output_names_every_e_code_form_and_keeps_causes():
    """The product's own E-code pattern: E + digit or letter + 4 digits (E10001, EZ3003, EC0010)."""
    lines = [
        "ATC run failed, Please check the detail log, Try 'atc --help' for more information",
        "EC0010: Failed to import Python module [AttributeError: `np.float_` was removed].",
        "        Solution: Check that all required components are properly installed.",
        "        TraceBack (most recent call last):",
        "        Compile op[Gemm_0] failed[FUNC:ReportErrMessage][FILE:error_manager.cc]",
        "W11001: Op [Gemm_0] does not hit the high-priority operator information library",
        "E10001: Value [x] for parameter [--soc_version] is invalid.",
        "ATC compiling: an unindented line after an E-code ends its block",
    ]
    ok, codes, errors = scan_output(lines)
    assert not ok and codes == ["EC0010", "E10001"] and errors[-1].startswith("E10001:")
    assert errors[1].startswith("EC0010:")
    assert errors[2] == "  Solution: Check that all required components are properly installed."
    assert errors[3] == "  TraceBack (most recent call last):" and errors[4].startswith("  Compile op[Gemm_0]")
    assert not any("W11001" in e for e in errors)  # a warning, not an error
    assert ECODE_RE.findall("W11001 E1000 E100011 e10001 EZ3003") == ["EZ3003"]
