"""Reading what msame printed: its timings (every variant), its errors, its output folder line.

Timing lines msame has printed (all on stdout):
    Inference time: 2.5542ms                                   one per call (per loop / file)
    Inference average time: 2.554200 ms                        file input, %f
    Inference average time without first time: 2.547842 ms     file input, loop > 1
    Inference average time : 2.55 ms                           folder input, %.2f
    Inference average time without first time: 2.55 ms        folder input, > 1 file
The regexes accept any spacing around the colon and any float notation.

Not every `[ERROR]` line is a verdict (msame at 9d6da90, src/sample_process.cpp, model_process.cpp):
- after `Execute sample success`, main has returned: the lines are SampleProcess's teardown
  (`destroy stream/context failed`, `reset device failed`, `finalize acl failed`), printed once
  the outputs are on disk and with exit code 0;
- `unload model failed, modelId is N` comes from ModelProcess's destructor after the outputs are
  written; `delete acl.json failed` is printed inside Process on success (--dump/--profiler);
- `[ERROR] MODULE(pid,proc):timestamp [file:line]...` is CANN's own log on stdout
  (ASCEND_SLOG_PRINT_TO_STDOUT=1), not msame's.
msame prints ACL's own message (aclGetRecentErrMsg: `EE1001: ...` and indented Solution /
TraceBack lines) untagged just before its `[ERROR]` line; `classify_errors` keeps it with it.

A null ACL message (9d6da90, src/*.cpp, inc/utils.h): msame prints it with
`cout << aclGetRecentErrMsg() << endl`; when ACL has no message the pointer is NULL, and
`cout << (const char*)nullptr` sets cout's badbit (libstdc++), so every later cout line of the
run prints nothing: the output-folder line, each `Inference time: Xms` (cout in both input
modes), later ACL messages. INFO_LOG/WARN_LOG/ERROR_LOG are fprintf(stdout) and the averages
printf, so `[INFO]`/`[ERROR]` lines, `Inference average time` and `Execute sample success`
still come. `null_acl_message` finds the first `[ERROR]`/`[WARN]` line that msame prints right
after ACL's message but that came without one (msame builds before 2022-03, commit 9d26828 of
the mirror, print no ACL message at all, which looks the same).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

FLOAT = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
CALL_RE = re.compile(rf"^\s*Inference time\s*:\s*{FLOAT}\s*ms\b")
AVERAGE_RE = re.compile(rf"^\s*Inference average time\s*:\s*{FLOAT}\s*ms\b")
AVERAGE_WO_FIRST_RE = re.compile(rf"^\s*Inference average time without first time\s*:\s*{FLOAT}\s*ms\b")
SUCCESS_TEXT = "Execute sample success"
ERROR_TAG = "[ERROR]"
CANN_LOG_RE = re.compile(r"\[(?:ERROR|WARNING|WARN|INFO|DEBUG|EVENT|TRACE)\]\s+[A-Z][A-Z0-9_]*\(\d+,[^)]*\):")
NOT_VERDICTS = ("unload model failed", "delete acl.json failed")  # printed after the outputs exist
MAX_CAUSE_LINES = 12
# msame's [ERROR]/[WARN] texts printed right after `cout << aclGetRecentErrMsg() << endl` (9d6da90:
# sample_process.cpp, model_process.cpp, utils.cpp); their look-alikes without it are left out
# ("load model from file failed" alone, "can't create data buffer, create input failed")
ACL_MESSAGE_BEFORE = (
    "acl init failed", "acl open device ", "acl create context failed", "acl create stream failed",
    "acl get run mode failed", "destroy stream failed", "destroy context failed", "reset device failed",
    "finalize acl failed", "load model from file failed, model file is", "get model description failed",
    "get input dynamic gear count failed", "get input index by name failed", "aclmdlSetDatasetTensorDesc failed",
    "get DynamicHW failed", "aclmdlSetDynamicHWSize failed", "get DynamicBatch failed",
    "aclmdlSetDynamicBatchSize failed", "aclmdlGetCurOutputDims failed", "aclmdlSetInputDynamicDims failed",
    "malloc device buffer failed", "add input dataset buffer failed", "memory set failed", "can't malloc buffer",
    "can't create data buffer, create output failed", "can't add data buffer", "aclrtMallocHost failed",
    "aclrtMemcpy failed", "aclrtFreeHost failed", "execute model failed, modelId is", "unload model failed",
    "memcpy failed. device buffer size", "exception_cb MallocHost failed", "exception_cb aclMemcpy failed",
)
ACL_TAGGED_RE = re.compile(r"^\s*\[(ERROR|WARN)\]\s+(.*)$")
PLOG_HINT = ("look in CANN's plog folder of the user msame ran as, ~/ascend/log (debug/plog and run/plog, "
             "plog-<pid>_*.log; ASCEND_PROCESS_LOG_PATH moves it)")


@dataclass
class MsameTimings:
    calls_ms: list[float] = field(default_factory=list)
    average_ms: float | None = None
    average_without_first_ms: float | None = None

    @property
    def found(self) -> bool:
        return bool(self.calls_ms) or self.average_ms is not None


def parse_timings(lines: list[str]) -> MsameTimings:
    t = MsameTimings()
    for line in lines:
        if m := CALL_RE.match(line):
            t.calls_ms.append(float(m.group(1)))
        elif m := AVERAGE_WO_FIRST_RE.match(line):
            t.average_without_first_ms = float(m.group(1))
        elif m := AVERAGE_RE.match(line):
            t.average_ms = float(m.group(1))
    return t


def error_lines(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if ERROR_TAG in line]


@dataclass
class MsameErrors:
    """msame's `[ERROR]` lines split into verdicts (the run failed) and warnings (it did not).

    Each entry is the `[ERROR]` line, preceded by the untagged ACL message msame printed just
    before it (its cause), if any. `reasons` says why each warning is not a verdict."""

    verdicts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @staticmethod
    def lines_of(entries: list[str]) -> list[str]:
        return [line for entry in entries for line in entry.split("\n")]


def _is_untagged_text(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith(("[", "/")) and not (
        CALL_RE.match(line) or AVERAGE_RE.match(line) or AVERAGE_WO_FIRST_RE.match(line))


def _cause(lines: list[str], index: int) -> list[str]:
    """The untagged ACL message lines printed right before lines[index], in order."""
    start = index
    while start > 0 and index - start < MAX_CAUSE_LINES and _is_untagged_text(lines[start - 1]):
        start -= 1
    return [line.rstrip() for line in lines[start:index]]


def classify_errors(lines: list[str]) -> MsameErrors:
    success_at = max((i for i, line in enumerate(lines) if SUCCESS_TEXT in line), default=None)
    out = MsameErrors()
    for i, line in enumerate(lines):
        if ERROR_TAG not in line:
            continue
        entry = "\n".join(_cause(lines, i) + [line.strip()])
        if CANN_LOG_RE.search(line):
            reason = "CANN's own log on stdout (ASCEND_SLOG_PRINT_TO_STDOUT), not msame's verdict"
        elif success_at is not None and i > success_at:
            reason = "teardown after 'Execute sample success': the outputs were already written"
        elif any(text in line for text in NOT_VERDICTS):
            reason = "printed after the outputs were written"
        else:
            out.verdicts.append(entry)
            continue
        out.warnings.append(entry)
        out.reasons.append(reason)
    return out


def null_acl_message(lines: list[str]) -> int | None:
    """The index of the first `[ERROR]`/`[WARN]` line msame prints after ACL's message that came
    without one: aclGetRecentErrMsg() returned NULL there, and every later cout line is missing.
    An empty message (a blank line before it) is not null: cout still works."""
    for i, line in enumerate(lines):
        m = ACL_TAGGED_RE.match(line)
        if not m or CANN_LOG_RE.search(line) or not m.group(2).startswith(ACL_MESSAGE_BEFORE):
            continue
        if i > 0 and (not lines[i - 1].strip() or _cause(lines, i)):
            continue
        return i
    return None


def silenced_calls(lines: list[str], since: int) -> int:
    """Executes after lines[since] that printed `model execute success` but no `Inference time`
    line (cout): how many per-call lines a null ACL message took away."""
    executes = sum(1 for line in lines[since:] if line.strip() == "[INFO] model execute success")
    calls = sum(1 for line in lines[since:] if CALL_RE.match(line))
    return max(0, executes - calls)


def null_acl_explained(lines: list[str], at: int) -> str:
    """What a null ACL message did, for an error message or a perf note."""
    lost = silenced_calls(lines, at)
    text = (f"msame's `{lines[at].strip()}` came without ACL's message before it: aclGetRecentErrMsg() "
            "returned null (or this msame predates 2022-03 and prints none), and msame's `cout << nullptr` "
            "silences every later cout line of the run (the output-folder line, each 'Inference time', later "
            "ACL messages; its [INFO]/[ERROR] lines and averages, printf, still come)")
    if lost:
        text += f"; {lost} execute(s) after it printed no 'Inference time' line"
    return f"{text}; for ACL's cause {PLOG_HINT}"


def printed_success(lines: list[str]) -> bool:
    return any(SUCCESS_TEXT in line for line in lines)


def printed_output_dir(lines: list[str], output_root: Path) -> Path | None:
    """The bare `<output>/<timestamp>` line msame prints after creating the folder (last wins)."""
    found = None
    for line in lines:
        text = line.strip()
        if not text or text.startswith("[") or "/" not in text:
            continue
        path = Path(text)
        if path.is_absolute() and path.parent == output_root and path.name not in ("", ".", ".."):
            found = path
    return found


# msame's lines for each input file (folder mode), besides its timing line: the task log sums
# them up instead of printing each (msame.log keeps them all)
PER_FILE_RE = re.compile(r"^\s*\[INFO\]\s+(start to process file|get max dynamic batch size success|"
                         r"model execute success|output data success|destroy model input success)")


class TaskLogLines:
    """msame's output for a person reading the task log: every line but the ones it prints for
    each input file, which become one progress line every `every` files. Called with each line."""

    def __init__(self, log, every: int = 1000):
        self.log, self.every, self.files, self.ms = log, every, 0, 0.0

    def __call__(self, line: str) -> None:
        call = CALL_RE.match(line)
        if call:
            self.files += 1
            self.ms += float(call.group(1))
            if self.files % self.every == 0:
                self.log(f"msame: {self.files} file(s) computed, {self.ms / self.files:.3f} ms per call on average")
        elif not PER_FILE_RE.match(line):
            self.log(line)
