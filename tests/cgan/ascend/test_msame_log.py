"""Every timing variant msame has printed, and the bare output-folder line."""

from pathlib import Path

from cgan.ascend.msame_log import error_lines, parse_timings, printed_output_dir, printed_success


def test_file_input_variants():
    t = parse_timings([
        "[INFO] model execute success", "Inference time: 2.5542ms", "Inference time: 2.54784ms",
        "Inference time: 1e-3ms", "Inference average time: 2.554200 ms",
        "Inference average time without first time: 2.547842 ms",
    ])
    assert t.calls_ms == [2.5542, 2.54784, 0.001]
    assert t.average_ms == 2.5542 and t.average_without_first_ms == 2.547842


def test_folder_input_variants_with_space_before_colon():
    t = parse_timings(["Inference time: 3ms", "Inference average time : 2.55 ms",
                       "Inference average time without first time : 2.50 ms"])
    assert t.calls_ms == [3.0] and t.average_ms == 2.55 and t.average_without_first_ms == 2.5


def test_averages_only_and_nothing():
    t = parse_timings(["Inference average time: 2.554200 ms"])
    assert t.found and t.calls_ms == [] and t.average_without_first_ms is None
    assert not parse_timings(["[INFO] acl init success", "The inference time is: 1 millisecond"]).found


def test_errors_and_success():
    lines = ["[INFO] acl init success", "[ERROR] acl open device 3 failed", "[INFO] pid: 7 Execute sample success"]
    assert error_lines(lines) == ["[ERROR] acl open device 3 failed"]
    assert printed_success(lines) and not printed_success(lines[:2])


def test_output_dir_line_both_formats():
    root = Path("/w/out")
    assert printed_output_dir(["[INFO] create model output success", "/w/out/20211113_073952"], root) \
        == root / "20211113_073952"
    assert printed_output_dir(["/w/out/2023610_9_5_6_123456"], root) == root / "2023610_9_5_6_123456"
    assert printed_output_dir(["/w/other/20211113_073952", "[INFO] start to process file:/w/out/x"], root) is None


def test_classify_errors_tells_verdicts_from_warnings():
    from cgan.ascend.msame_log import classify_errors

    lines = [
        "[INFO] acl init success",
        "[ERROR] RUNTIME(4176,msame):2026-11-30-10:00:00.123.456 [device.cc:1]4176 rtGetDevMsg failed",
        "EE9999: [PID: 4176] Inner Error!",
        "        TraceBack (most recent call last):",
        "[ERROR] aclrtMemcpy failed, ret[507899]",
        "Inference average time : 2.55 ms",
        "[ERROR] unload model failed, modelId is 1",
        "[INFO] unload model success, model Id is 1",
        "[INFO] pid: 4176 Execute sample success",
        "EE9999: [PID: 4176] Inner Error!",
        "[ERROR] destroy stream failed",
        "[INFO] end to destroy stream",
        "[ERROR] finalize acl failed",
    ]
    errors = classify_errors(lines)
    assert errors.verdicts == ["EE9999: [PID: 4176] Inner Error!\n        TraceBack (most recent call last):\n"
                               "[ERROR] aclrtMemcpy failed, ret[507899]"]
    assert [w.splitlines()[-1] for w in errors.warnings] == [
        lines[1], "[ERROR] unload model failed, modelId is 1", "[ERROR] destroy stream failed",
        "[ERROR] finalize acl failed"]
    assert errors.warnings[2].startswith("EE9999")  # the cause travels with the warning too
    assert errors.reasons[0].startswith("CANN's own log") and errors.reasons[2].startswith("teardown")
    # without the success line nothing is teardown: the same [ERROR] lines are verdicts
    failed = classify_errors([line for line in lines if "Execute sample success" not in line])
    assert "[ERROR] destroy stream failed" in failed.lines_of(failed.verdicts)
    assert "[ERROR] unload model failed, modelId is 1" not in failed.lines_of(failed.verdicts)


def test_the_task_log_gets_a_progress_line_for_msames_per_file_lines():
    """msame prints about five lines per input file; the task log gets every other line as it
    comes and one progress line per `every` files (msame.log keeps them all)."""
    from cgan.ascend.msame_log import TaskLogLines

    logged: list[str] = []
    sink = TaskLogLines(logged.append, every=2)
    for i in range(3):
        for line in (f"[INFO] start to process file:../in/grid_0000000{i}.bin", "[INFO] model execute success",
                     "Inference time: 2.5ms", "[INFO] get max dynamic batch size success",
                     "[INFO] output data success", "[INFO] destroy model input success"):
            sink(line)
    for line in ("Inference average time : 2.50 ms", "[ERROR] unload model failed, modelId is 1",
                 "Execute sample success"):
        sink(line)
    assert logged == ["msame: 2 file(s) computed, 2.500 ms per call on average",
                      "Inference average time : 2.50 ms", "[ERROR] unload model failed, modelId is 1",
                      "Execute sample success"]


def test_a_null_acl_message_is_found_where_msame_prints_one():
    from cgan.ascend.msame_log import null_acl_message, silenced_calls

    with_message = ["[INFO] acl init success", "EE1001: [PID: 7] The argument is invalid.",
                    "        TraceBack (most recent call last):", "[ERROR] acl open device 5 failed"]
    assert null_acl_message(with_message) is None
    assert null_acl_message(["[INFO] acl init success", "", "[ERROR] acl open device 5 failed"]) is None  # ""
    assert null_acl_message(["[INFO] x", "[ERROR] load model from file failed"]) is None  # no cout before it
    null = ["[INFO] create model output success", "/out/2023610_9_5_6_1",
            "[INFO] start to process file:../in/a.bin", "[INFO] model execute success", "Inference time: 2.5ms",
            "[INFO] get max dynamic batch size success", "[ERROR] aclrtMemcpy failed, ret[507899]",
            "[INFO] start to process file:../in/b.bin", "[INFO] model execute success",
            "[INFO] get max dynamic batch size success", "Inference average time : 2.50 ms"]
    assert null_acl_message(null) == 6 and silenced_calls(null, 6) == 1
    cann = ["[INFO] x", "[ERROR] RUNTIME(1,msame):2024-01-01-00:00:00.1.2 [x.cc:1]1 acl open device 0 failed"]
    assert null_acl_message(cann) is None  # CANN's own log line, not msame's
