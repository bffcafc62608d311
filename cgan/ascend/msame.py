"""msame: om + input bins -> output bins, a perf record and the raw log, or a clear error.

    msame --model <om> --input <file.bin | folder> --output <out> --outfmt BIN --loop N --device D

Each run gets a private staging folder `<output_root>/.msame-<id>/` holding its working
directory (msame reads ./acl.json from its CWD; an empty CWD means none is read), a folder of
links to the input bins only (msame feeds every file of a folder to the model; it is passed as
`../in`, a path without ".bin": msame picks single-file mode when ".bin" is anywhere in the
input path) and its `--output` (msame mkdirs one level only and names its result folder by a
timestamp that can collide between runs). msame's result folder is found from the bare path
line it prints, else as the one new subfolder; its name (`20211113_073952` or
`2023610_9_5_6_123456`) is never parsed. It is moved to `<output_root>/<timestamp>/` with
perf.json and msame.log inside, once the run passed every check:

- exit code 0 (msame exits 0 on many failures, so this alone means nothing),
- `Execute sample success` printed and no `[ERROR]` line that is a verdict; the ones that are
  not (teardown after the success line, `unload model failed`, CANN's own log lines: see
  cgan.ascend.msame_log) are logged as warnings and kept in perf.json's notes and msame.log,
- every expected output present with an output-bin size of cgan.layout.tensors: folder input gives
  `<input stem>_output_0.bin` per bin, file input `<om name>_output_0.bin`,
- timings printed (every variant, see cgan.ascend.msame_log).

`--device` is the ACL device id: this process's NPUs counted from 0 (cgan.ascend.inventory: on a
bare host npu-smi's Device column, not its NPU column; inside a container and after
ASCEND_RT_VISIBLE_DEVICES, renumbered). Before msame runs the device is checked against that
inventory, the one the lease uses (CGAN_NPU_PRECHECK=0 skips it).
CANN's stdout logging (ASCEND_SLOG_PRINT_TO_STDOUT / ASCEND_LOG_PRINT_TO_STDOUT) is switched
off for msame's process; its logs stay in the plog folder.

msame is C++: its stdout into a pipe is fully buffered (4 KB blocks), so a killed or crashed
msame would take its last lines with it and the task log would get them in bursts. It runs under
`stdbuf -oL -eL` when stdbuf is on the PATH of msame's environment (a note and a warning when it
is not), and every failure quotes the last lines msame printed. A null ACL message (msame's `cout
<< aclGetRecentErrMsg()` with NULL silences its later cout lines: cgan.ascend.msame_log) is named
as such. Outputs of half the float32 size whose values read as float16 are the outputs of an om
converted without `--output_type=FP32`: refused, naming the cause and the fix.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cgan.ascend.errors import AscendError, MsameError
from cgan.ascend.inventory import read_inventory
from cgan.ascend.msame_log import (
    MsameErrors,
    classify_errors,
    null_acl_explained,
    null_acl_message,
    parse_timings,
    printed_output_dir,
    printed_success,
)
from cgan.ascend.proc import LineSink, run_streaming
from cgan.ascend.target import check_om_target
from cgan.ascend.validate import check_device, check_executable, check_loop, check_path
from cgan.layout.tensors import INPUT_BIN_BYTES, OUTPUT_SUFFIX, SAMPLES_PER_GRID, SUPPORTED_CHANNELS, output_bin_bytes
from cgan.recipe.bins import list_bins
from cgan.recipe.outputs import output_name
from cgan.recipe.perf import PerfRecord, make_record
from cgan.runtimes.folder_runner import InferenceRun

LOG_NAME = "msame.log"
MAX_QUOTED_LINES = 20
TAIL_LINES = 15  # msame's last lines, quoted by every failure
STDBUF_ARGS = ("-oL", "-eL")
NO_STDBUF = ("stdbuf not found on msame's PATH: msame's stdout is block-buffered into the pipe (4 KB bursts "
             "in the task log, and a killed or crashed msame loses its last lines); install coreutils' stdbuf")
STAGED_INPUT = "../in"  # relative to msame's CWD: no ".bin" in it, whatever output_root is
CANN_STDOUT_LOG_VARS = ("ASCEND_SLOG_PRINT_TO_STDOUT", "ASCEND_LOG_PRINT_TO_STDOUT")
PRECHECK_VAR = "CGAN_NPU_PRECHECK"
log = logging.getLogger(__name__)


@dataclass
class MsameRun(InferenceRun):
    log_path: Path
    argv: list[str]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # [ERROR] lines that were not failures


def _inputs(input_path: Path) -> tuple[list[Path], bool]:
    """(input bins, folder mode), each bin checked against the 28,800-byte contract."""
    if input_path.is_dir():
        bins = list_bins(input_path)
    elif input_path.is_file() and ".bin" in input_path.name:
        bins = [input_path]
    else:
        raise AscendError(f"input {input_path} is neither a folder of bins nor a .bin file")
    if not bins:
        raise AscendError(f"no *.bin files in {input_path}; create them with `cgan bins`")
    wrong = [p.name for p in bins if p.stat().st_size != INPUT_BIN_BYTES]
    if wrong:
        raise AscendError(f"input bins {', '.join(wrong[:5])} are not {INPUT_BIN_BYTES:,} bytes "
                          "(float32 [100, 72]); msame would fail inside the model execute")
    return bins, input_path.is_dir()


def _stage_inputs(bins: list[Path], folder: Path) -> Path:
    """A folder holding only the bins (links): msame feeds every file of a folder to the model."""
    folder.mkdir()
    for path in bins:
        (folder / path.name).symlink_to(path)
    return folder


def expected_outputs(model: Path, bins: list[Path], folder_mode: bool) -> list[str]:
    if folder_mode:
        return [output_name(p) for p in bins]
    return [model.name[: model.name.rfind(".")] + OUTPUT_SUFFIX]


def _check_outputs(run_dir: Path, names: list[str], channels: int | None) -> tuple[list[Path], list[str]]:
    sizes = [output_bin_bytes(channels)] if channels else [output_bin_bytes(c) for c in SUPPORTED_CHANNELS]
    problems, found, seen = [], [], set()
    for name in names:
        path = run_dir / name
        if not path.is_file():
            problems.append(f"output {name} is missing")
            continue
        size = path.stat().st_size
        if size not in sizes:
            want = " or ".join(f"{s:,}" for s in sizes)
            problems.append(f"output {name} has {size:,} bytes, expected {want}" + _fp16_cause(path, size, sizes))
            continue
        seen.add(size)
        found.append(path)
    if len(seen) > 1:
        problems.append("outputs have different sizes (mixed channel counts)")
    return found, problems


def _fp16_cause(path: Path, size: int, sizes: list[int]) -> str:
    """': the om's outputs are float16 ...' when the file is half a float32 output and its values,
    read as float16, are a generator's (finite, within tanh's [-1, 1]); '' otherwise (a short write)."""
    if 2 * size not in sizes:
        return ""
    import numpy as np

    values = np.fromfile(path, dtype="<f2")
    if not values.size or not np.isfinite(values).all() or float(np.abs(values).max()) > 1.0:
        return ""
    return (f": the om's outputs are float16 ({size:,} bytes, half of the {2 * size:,} float32 bytes): it was "
            "converted without --output_type=FP32 (an fp16 precision mode keeps the last layer's float16); "
            "reconvert it with atc --output_type=FP32 (cgan convert passes it)")


def _discover(lines: list[str], out_root: Path) -> tuple[Path | None, str]:
    printed = printed_output_dir(lines, out_root)
    if printed is not None and printed.is_dir():
        return printed, "from msame's output line"
    subdirs = [d for d in out_root.iterdir() if d.is_dir()]
    if len(subdirs) == 1:
        return subdirs[0], "the one new folder (msame printed no usable output line)"
    return None, f"{len(subdirs)} folders under {out_root} and no usable output line"


def _perf(lines: list[str], *, device: int, loop: int, folder_mode: bool, grids: int,
          wall_s: float, tool: dict[str, str], errors: MsameErrors) -> PerfRecord:
    t = parse_timings(lines)
    notes = []
    null_at = null_acl_message(lines)
    if null_at is not None:
        notes.append(f"not a failure: {null_acl_explained(lines, null_at)}")
        if len(t.calls_ms) < (grids if folder_mode else loop):
            t.calls_ms = []  # per-call lines silenced: the printed average (printf) stands for them
            notes.append("per-call 'Inference time' lines missing after the null ACL message: latency from "
                         "msame's printed average")
    notes += [f"msame printed an [ERROR] line that is not a failure ({reason}): "
             + " / ".join(entry.split("\n")) for entry, reason in zip(errors.warnings, errors.reasons, strict=True)]
    if errors.warnings:
        tool["msame_error_lines_not_failures"] = str(len(errors.warnings))
    notes += ["latency = msame's host wall clock around one synchronous aclmdlExecute of batch "
             f"{SAMPLES_PER_GRID} (one grid); no H2D/D2H copies or file I/O"]
    if len(t.calls_ms) >= 2:
        latencies, warmup = t.calls_ms[1:], 1
        notes.append("first call excluded as warm-up, like msame's 'without first time' average")
    elif t.calls_ms:
        latencies, warmup = t.calls_ms, 0
        notes.append("a single call: its time includes the first-call warm-up")
    else:
        best = t.average_without_first_ms if t.average_without_first_ms is not None else t.average_ms
        if best is None:  # run_msame refuses such a log before it gets here
            raise AscendError("msame printed no inference time")
        latencies, warmup = [best], 0
        notes.append("no per-call lines printed: msame's printed average used as the one sample")
    if folder_mode and loop > 1:
        notes.append(f"--loop {loop} ignored by msame for folder input: one call per bin")
    for label, value in (("average_ms", t.average_ms), ("average_without_first_ms", t.average_without_first_ms)):
        if value is not None:
            tool[f"msame_{label}"] = f"{value:g}"
    return make_record(
        backend="msame", device=f"npu:{device}", batch=SAMPLES_PER_GRID, latencies_ms=latencies,
        grids=grids, warmup_calls=warmup, threads=None, wall_s=wall_s,
        loops=1 if folder_mode else loop, notes=notes, tool=tool,
    )


def _quote(lines: list[str]) -> str:
    quoted = "\n".join(f"  {line}" for line in lines[:MAX_QUOTED_LINES])
    if len(lines) > MAX_QUOTED_LINES:
        quoted += f"\n  ... {len(lines) - MAX_QUOTED_LINES} more"
    return quoted


def _error(message: str, lines: list[str], exit_code: int | None, *, buffered: bool = False) -> MsameError:
    """The failure, quoting msame's verdict lines with ACL's message before each (its cause), what
    a null ACL message silenced, and msame's last lines (a timeout's or a crash's explanation).
    `buffered`: msame ran without stdbuf, so a kill or a crash may have lost its last lines."""
    errors = classify_errors(lines)
    verdicts = MsameErrors.lines_of(errors.verdicts)
    text = message
    if verdicts:
        text += f"\nmsame said:\n{_quote(verdicts)}"
    if errors.warnings:
        text += f"\nalso printed (not failures by themselves):\n{_quote(MsameErrors.lines_of(errors.warnings))}"
    null_at = null_acl_message(lines)
    if null_at is not None:
        text += f"\n{null_acl_explained(lines, null_at)}"
    tail = lines[-TAIL_LINES:]
    if tail:
        text += f"\nmsame's last {len(tail)} of {len(lines)} line(s):\n{_quote(tail)}"
    else:
        text += "\nmsame printed nothing"
    if buffered:
        text += f"\n({NO_STDBUF})"
    return MsameError(text, error_lines=verdicts, exit_code=exit_code)


def stdbuf_prefix(env: dict[str, str]) -> tuple[list[str], str | None]:
    """`stdbuf -oL -eL` from the PATH of msame's environment, so msame's stdout is line-buffered
    into the pipe; ([], a note) when there is none."""
    stdbuf = shutil.which("stdbuf", path=env.get("PATH"))
    if stdbuf is None:
        return [], NO_STDBUF
    return [stdbuf, *STDBUF_ARGS], None


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def msame_env(env: dict[str, str] | None) -> tuple[dict[str, str], list[str]]:
    """msame's environment without CANN's stdout logging (its [ERROR] lines are no verdicts)."""
    child = dict(os.environ if env is None else env)
    notes = []
    for var in CANN_STDOUT_LOG_VARS:
        if child.pop(var, None) not in (None, "", "0"):
            notes.append(f"{var} cleared for msame: CANN's logs stay in the plog folder")
    return child, notes


def check_device_present(device: int, npu_smi: str | None, env: Mapping[str, str]) -> str | None:
    """Refuse a device this process does not have (AscendError naming the ones it has, as the
    lease sees them: cgan.ascend.inventory); a note saying what was checked. Skipped with
    npu_smi=None (the lease checked it) or CGAN_NPU_PRECHECK=0."""
    if not npu_smi:
        return None
    if env.get(PRECHECK_VAR, "").strip().lower() in ("0", "false", "no", "off"):
        return f"device {device} not checked before msame ({PRECHECK_VAR}={env[PRECHECK_VAR]})"
    try:
        inv = read_inventory(env, npu_smi)
    except AscendError:
        return "no NPU inventory (no device node, npu-smi or CGAN_NPU_DEVICES): device id not checked before msame"
    inv.get(device)
    return f"device {device} is ACL device {inv.get(device).describe()} ({inv.source})"


def _move_into_place(run_dir: Path, output_root: Path) -> Path:
    target = output_root / run_dir.name
    n = 0
    while True:
        try:
            target.mkdir()
            break
        except FileExistsError:
            n += 1
            target = output_root / f"{run_dir.name}_{n}"
    os.replace(run_dir, target)  # onto the empty folder just made: atomic on POSIX
    return target


def run_msame(
    model: str | os.PathLike,
    input_path: str | os.PathLike,
    output_root: str | os.PathLike,
    *,
    device: int = 0,
    loop: int = 1,
    msame: str | os.PathLike = "msame",
    channels: int | None = None,
    env: dict[str, str] | None = None,
    on_line: LineSink | None = None,
    timeout_s: float | None = None,
    npu_smi: str | None = "npu-smi",
    pass_fds: tuple[int, ...] = (),
) -> MsameRun:
    """Run msame once and check everything; MsameError (quoting msame's errors) on failure.

    `device` is the ACL device id, checked against this process's NPU inventory (npu-smi
    looked up as `npu_smi`; None: not checked, as when a lease already did). `pass_fds`: the device lease's lock
    (cgan.ascend.lease), so the NPU stays leased while msame runs even if its task is killed."""
    check_device(device)
    check_loop(loop)
    if channels is not None and channels not in SUPPORTED_CHANNELS:
        raise AscendError(f"channels must be one of {SUPPORTED_CHANNELS}, got {channels!r}")
    program = check_executable(msame, "msame")
    model = check_path(model, "om model")
    input_path = check_path(input_path, "input")
    output_root = check_path(output_root, "output folder")
    if not model.is_file() or ".om" not in model.name:
        raise AscendError(f"om model {model} not found (msame needs a file whose name holds '.om')")
    check_om_target(model.name)
    bins, folder_mode = _inputs(input_path)
    child_env, env_notes = msame_env(env)
    found = shutil.which(program, path=child_env.get("PATH")) if "/" not in program else program
    if not found or not os.access(found, os.X_OK):
        raise AscendError(f"msame not found ({program}): build it from Ascend/tools and pass its path")
    device_note = check_device_present(device, npu_smi, child_env)
    line_buffer, stdbuf_note = stdbuf_prefix(child_env)
    if stdbuf_note:
        log.warning("%s", stdbuf_note)
        env_notes.append(stdbuf_note)
    output_root.mkdir(parents=True, exist_ok=True)
    stage = output_root / f".msame-{uuid.uuid4().hex[:12]}"
    cwd, out = stage / "cwd", stage / "out"
    try:
        cwd.mkdir(parents=True)
        out.mkdir()
        if folder_mode:
            _stage_inputs(bins, stage / "in")
        msame_input = STAGED_INPUT if folder_mode else str(input_path)
        argv = [*line_buffer, found, "--model", str(model), "--input", msame_input, "--output", str(out),
                "--outfmt", "BIN", "--loop", str(loop), "--device", str(device)]
        start = time.perf_counter()
        result = run_streaming(argv, cwd=cwd, env=child_env, on_line=on_line, timeout_s=timeout_s,
                               pass_fds=pass_fds)
        lines = result.lines
        if result.timed_out:
            raise _error(f"msame did not finish within {timeout_s} s and was stopped", lines, None,
                         buffered=not line_buffer)
        problems = []
        if result.exit_code < 0:
            problems.append(f"killed by signal {_signal_name(-result.exit_code)} (a crash: msame ended without "
                            "its teardown)")
        elif result.exit_code != 0:
            problems.append(f"exit code {result.exit_code}")
        errors = classify_errors(lines)
        if errors.verdicts:
            problems.append("[ERROR] lines printed")
        if not printed_success(lines):
            problems.append("'Execute sample success' never printed")
        run_dir, how = _discover(lines, out)
        if run_dir is None:
            problems.append(f"no output folder: {how}")
            outputs: list[Path] = []
        else:
            outputs, missing = _check_outputs(run_dir, expected_outputs(model, bins, folder_mode), channels)
            problems += missing
        if not parse_timings(lines).found:
            problems.append("no inference time printed")
        if problems:
            raise _error(f"msame on device {device} failed: {'; '.join(problems)}", lines, result.exit_code,
                         buffered=not line_buffer and result.exit_code < 0)
        assert run_dir is not None  # a missing output folder is one of the problems above
        tool = {"msame": found, "model": str(model), "output_folder": f"{run_dir.name} ({how})"}
        perf = _perf(lines, device=device, loop=loop, folder_mode=folder_mode, grids=len(outputs),
                     wall_s=time.perf_counter() - start, tool=tool, errors=errors)
        perf.notes += env_notes + ([device_note] if device_note else [])
        null_at = null_acl_message(lines)
        if null_at is not None:
            log.warning("msame run passed its checks; %s", null_acl_explained(lines, null_at))
        for entry, reason in zip(errors.warnings, errors.reasons, strict=True):
            log.warning("msame printed an [ERROR] line that is not a failure (%s): %s", reason,
                        " / ".join(entry.split("\n")))
        trailer = "".join(f"# cgan: not a failure ({reason}): {entry.splitlines()[-1]}\n"
                          for entry, reason in zip(errors.warnings, errors.reasons, strict=True))
        (run_dir / LOG_NAME).write_text(result.text + trailer)
        perf.write(run_dir)
        final = _move_into_place(run_dir, output_root)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return MsameRun(output_dir=final, outputs=[final / p.name for p in outputs], perf=perf,
                    log_path=final / LOG_NAME, argv=argv, notes=[how, *env_notes],
                    warnings=MsameErrors.lines_of(errors.warnings))


# Grids per msame process when a shard is run in batches: about 2.5 s of a 310P NPU, against the
# few hundred ms msame takes to start and load the om, and small enough that the first batch's
# grids are rendered while the NPU computes the rest.
BATCH_GRIDS = 1000
POLL_S = 0.05  # how often the hand-off thread looks for outputs msame has written


def run_msame_batches(
    model: str | os.PathLike,
    input_dir: str | os.PathLike,
    output_root: str | os.PathLike,
    *,
    on_output,
    batch_grids: int = BATCH_GRIDS,
    poll_s: float = POLL_S,
    **kwargs,
) -> MsameRun:
    """msame over a folder of bins in batches of `batch_grids`, one msame process after another
    (run_msame, every check of each), each output handed to `on_output(path, samples)` as soon as
    msame has written it whole, on a thread of its own, while msame computes the next: the NPU
    waits neither for the grids to be rendered nor for a batch to end. One MsameRun for the
    folder: every output moved into one result folder at the end, the batches' logs one after
    another in msame.log, one perf record.

    An output counts as written when its size is an output bin's (the run's `channels`, else
    any supported C): msame writes each output with one fwrite and closes it, so a file being
    written is shorter (its whole 4 KiB blocks first, the rest at fclose). A run that fails its
    checks fails the whole call; outputs already handed over belong to that failed try."""
    import threading

    from cgan.recipe.outputs import read_output_bin

    if batch_grids < 1:
        raise AscendError(f"batch_grids must be 1 or more, got {batch_grids!r}")
    bins, folder_mode = _inputs(check_path(input_dir, "input"))
    if not folder_mode:
        raise AscendError(f"run_msame_batches needs a folder of bins, got the file {input_dir}")
    output_root = check_path(output_root, "output folder")
    final = output_root / f"batches-{uuid.uuid4().hex[:12]}"
    links = output_root / f".batch-inputs-{uuid.uuid4().hex[:12]}"
    staging = output_root / "batch-runs"
    final.mkdir(parents=True)
    staging.mkdir(exist_ok=True)
    channels = kwargs.get("channels")
    whole = {output_bin_bytes(channels)} if channels else {output_bin_bytes(c) for c in SUPPORTED_CHANNELS}
    runs: list[MsameRun] = []
    finished: list[MsameRun] = []  # runs whose outputs the hand-off thread has still to check
    lock, stop, failed = threading.Lock(), threading.Event(), []
    handed: set[str] = set()

    def hand(path: Path) -> None:
        handed.add(path.name)
        on_output(final / path.name, read_output_bin(path))

    def written_so_far() -> list[Path]:
        """Outputs msame has written whole in the live run's staging folder (.msame-<id>/...)."""
        ready = []
        for live in staging.glob(".msame-*"):
            for folder, _dirs, files in os.walk(live):
                for name in files:
                    if name.endswith(OUTPUT_SUFFIX) and name not in handed:
                        path = Path(folder) / name
                        try:
                            if path.stat().st_size in whole:
                                ready.append(path)
                        except FileNotFoundError:  # moved by run_msame as it ended: handed from its run
                            pass
        return sorted(ready, key=lambda p: p.name)

    def hand_off() -> None:
        try:
            while True:
                stopping = stop.wait(poll_s)
                with lock:
                    done, finished[:] = list(finished), []
                for run in done:  # an ended run: every output it listed, in order
                    for path in run.outputs:
                        if path.name not in handed:
                            hand(path)
                if stopping:
                    return
                for path in written_so_far():
                    try:
                        hand(path)
                    except FileNotFoundError:  # moved as msame ended: handed from its run next time
                        handed.discard(path.name)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=hand_off, name="msame-hand-off", daemon=True)
    worker.start()
    try:
        for i in range(0, len(bins), batch_grids):
            if failed:
                break
            folder = links / f"batch_{i // batch_grids:05d}"
            folder.mkdir(parents=True)
            for path in bins[i:i + batch_grids]:
                (folder / path.name).symlink_to(path.resolve())
            run = run_msame(model, folder, staging, **kwargs)
            runs.append(run)
            with lock:
                finished.append(run)
    finally:
        stop.set()
        worker.join()
        shutil.rmtree(links, ignore_errors=True)
    if failed:
        raise failed[0]
    for run in runs:
        for path in run.outputs:
            os.replace(path, final / path.name)
    (final / LOG_NAME).write_text("".join(f"# cgan: msame batch {n} of {len(runs)} ({len(r.outputs)} bins)\n"
                                          + r.log_path.read_text() for n, r in enumerate(runs, 1)))
    first = runs[0].perf
    samples = [ms for r in runs for ms in r.perf.samples_ms]
    notes = list(dict.fromkeys(note for r in runs for note in r.perf.notes))
    notes.append(f"{len(runs)} msame process(es) of at most {batch_grids} bins, each grid rendered as soon as "
                 "msame had written it")
    perf = make_record(backend=first.backend, device=first.device, batch=first.batch, latencies_ms=samples,
                       grids=sum(r.perf.grids for r in runs), warmup_calls=sum(r.perf.warmup_calls for r in runs),
                       threads=first.threads, wall_s=sum(r.perf.wall_s for r in runs), loops=first.loops,
                       notes=notes, tool=first.tool)
    perf.write(final)
    shutil.rmtree(staging, ignore_errors=True)
    return MsameRun(output_dir=final, outputs=[final / p.name for r in runs for p in r.outputs], perf=perf,
                    log_path=final / LOG_NAME, argv=runs[-1].argv, notes=runs[0].notes,
                    warnings=[w for r in runs for w in r.warnings])
