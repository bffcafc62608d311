"""atc: ONNX -> om, with every flag validated and success judged on three facts.

The command (no shell, one argument each):

    atc --framework=5 --model=<onnx> --output=<dir>/<name> --input_format=ND
        --input_shape=image:100,72 --soc_version=<soc> --output_type=FP32
        --precision_mode=<mode> --log=<level>

--input_shape is read from the ONNX file. --auto_tune_mode is never passed (current atc
rejects it: Auto Tune was replaced by AOE). atc's own --precision_mode default is force_fp16;
ours is the same value, passed explicitly so it is visible in the log and in the cache key.

Success = exit code 0 AND "ATC run success" printed AND an om exists, found by the glob
`<name>*.om` because newer atc may name it `<name>_linux_<arch>.om`. atc runs in a fresh folder
beside the destination (it drops fusion_result.json and kernel_meta/ into its CWD) and the om is
renamed into place only on success, keeping the name atc gave it.

Paths reach atc only when their realpath matches atc's own pattern (letters, digits, Chinese
characters, ./_-), checked before atc runs. A failure quotes atc's E-code lines with the
indented `Possible Cause:`, `Solution:` and `TraceBack` lines atc prints after each.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cgan.ascend.errors import AscendError, AtcError
from cgan.ascend.proc import LineSink, run_streaming
from cgan.ascend.toolkit import Toolkit
from cgan.ascend.validate import check_atc_path, check_choice, check_soc_version

PRECISION_MODES = (
    "force_fp16", "force_fp32", "cube_fp16in_fp32out", "allow_mix_precision",
    "allow_mix_precision_fp16", "allow_mix_precision_bf16", "allow_fp32_to_fp16",
    "allow_fp32_to_bf16", "must_keep_origin_dtype",
)
TOOL_DEFAULT_PRECISION_MODE = "force_fp16"
DEFAULT_PRECISION_MODE = TOOL_DEFAULT_PRECISION_MODE
LOG_LEVELS = ("debug", "info", "warning", "error", "null")
DEFAULT_LOG_LEVEL = "error"
SUCCESS_TEXT = "ATC run success"
FAILED_TEXT = "ATC run failed"
ECODE_RE = re.compile(r"\b(E[0-9A-Z]\d{4})\b")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}\Z")
TENSOR_NAME_RE = re.compile(r"^[A-Za-z0-9_./-]+\Z")
MAX_QUOTED_LINES = 40
CAUSE_STARTS = ("Possible Cause", "Solution", "TraceBack")


@dataclass(frozen=True)
class AtcOptions:
    soc_version: str
    precision_mode: str = DEFAULT_PRECISION_MODE
    log_level: str = DEFAULT_LOG_LEVEL

    def validate(self) -> AtcOptions:
        check_soc_version(self.soc_version)
        check_choice(self.precision_mode, "precision_mode", PRECISION_MODES)
        check_choice(self.log_level, "log level", LOG_LEVELS)
        return self

    def model_flags(self, input_shape: str) -> list[str]:
        """The flags that shape the om, without paths (and without --log): the cache key's part."""
        return [
            "--framework=5", "--input_format=ND", f"--input_shape={input_shape}",
            f"--soc_version={self.soc_version}", "--output_type=FP32",
            f"--precision_mode={self.precision_mode}",
        ]


@dataclass
class AtcResult:
    om_path: Path
    argv: list[str]
    exit_code: int
    lines: list[str]
    duration_s: float
    input_shape: str
    flags: list[str]
    toolkit_version: str
    notes: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def onnx_input_shape(onnx_path: str | os.PathLike) -> str:
    """`name:d0,d1[;name2:...]` of the graph's real inputs; fixed positive dims only."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise AscendError(f"{onnx_path} is not a readable ONNX model: {exc}") from exc
    initializers = {init.name for init in model.graph.initializer}
    parts = []
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inp.type.tensor_type.shape.dim]
        if not TENSOR_NAME_RE.fullmatch(inp.name):
            raise AscendError(f"ONNX input name {inp.name!r} cannot be passed to --input_shape")
        if not dims or any(d <= 0 for d in dims):
            raise AscendError(
                f"ONNX input {inp.name!r} has a dynamic or empty shape {dims}: export with a "
                "fixed batch (cgan export --batch 100) before converting"
            )
        parts.append(f"{inp.name}:{','.join(map(str, dims))}")
    if not parts:
        raise AscendError(f"{onnx_path} has no graph input")
    return ";".join(parts)


def build_argv(atc: str, onnx_path: Path, output_stem: Path, options: AtcOptions, input_shape: str) -> list[str]:
    flags = options.model_flags(input_shape)
    return [atc, flags[0], f"--model={onnx_path}", f"--output={output_stem}", *flags[1:],
            f"--log={options.log_level}"]


def scan_output(lines: list[str]) -> tuple[bool, list[str], list[str]]:
    """(printed success, E-codes in order of appearance, the lines that report errors: each
    E-code line followed by its indented Possible Cause / Solution / TraceBack lines)."""
    success = any(SUCCESS_TEXT in line for line in lines)
    codes: list[str] = []
    errors = []
    in_error = False
    for line in lines:
        found = ECODE_RE.findall(line)
        codes += [c for c in found if c not in codes]
        upper = line.upper()
        stripped = line.strip()
        if found or FAILED_TEXT in line or upper.startswith("ERROR") or "[ERROR]" in upper:
            errors.append(stripped)
            in_error = bool(found) or in_error and line[:1].isspace()
        elif in_error and stripped and (line[:1].isspace() or stripped.startswith(CAUSE_STARTS)):
            errors.append("  " + stripped)  # the cause, solution or traceback of the E-code above
        else:
            in_error = False
    return success, codes, errors


def find_om(folder: Path, name: str) -> list[Path]:
    """The oms atc wrote for `--output=<folder>/<name>`: `<name>.om` or `<name>_<os>_<arch>.om`."""
    pattern = re.compile(rf"^{re.escape(name)}(?:_[a-z]+_[A-Za-z0-9_]+)?\.om$")
    return sorted(p for p in folder.glob(f"{name}*.om") if pattern.fullmatch(p.name) and p.is_file())


def _fail(message: str, result, codes: list[str], errors: list[str]) -> AtcError:
    quoted = "\n".join(f"  {line}" for line in errors[:MAX_QUOTED_LINES])
    more = f"\n  ... {len(errors) - MAX_QUOTED_LINES} more" if len(errors) > MAX_QUOTED_LINES else ""
    text = message + (f" [{', '.join(codes)}]" if codes else "")
    if quoted:
        text += f"\natc said:\n{quoted}{more}"
    return AtcError(text, codes=codes, error_lines=errors, exit_code=result.exit_code)


def run_atc(
    onnx_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: AtcOptions,
    *,
    toolkit: Toolkit,
    name: str = "cgan",
    on_line: LineSink | None = None,
    timeout_s: float | None = None,
) -> AtcResult:
    """Convert onnx_path to `<out_dir>/<name>[_<os>_<arch>].om`; AtcError on any failure."""
    options.validate()
    onnx_path = check_atc_path(onnx_path, "ONNX model")
    out_dir = check_atc_path(out_dir, "output folder")
    if not NAME_RE.fullmatch(name or ""):
        raise AscendError(f"om name {name!r}: use letters, digits, '_' and '-' (no suffix)")
    if not onnx_path.is_file():
        raise AscendError(f"ONNX model {onnx_path} not found; create it with `cgan export`")
    input_shape = onnx_input_shape(onnx_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".atc-", dir=out_dir))
    try:
        argv = build_argv(toolkit.atc, onnx_path, work / name, options, input_shape)
        result = run_streaming(argv, cwd=work, env=toolkit.env, on_line=on_line, timeout_s=timeout_s)
        success, codes, errors = scan_output(result.lines)
        if result.timed_out:
            raise _fail(f"atc did not finish within {timeout_s} s and was stopped", result, codes, errors)
        if result.exit_code != 0:
            raise _fail(f"atc failed with exit code {result.exit_code}", result, codes, errors)
        if not success:
            raise _fail(f"atc exited 0 but never printed '{SUCCESS_TEXT}'", result, codes, errors)
        oms = find_om(work, name)
        if not oms:
            raise _fail(f"atc printed '{SUCCESS_TEXT}' but wrote no {name}*.om", result, codes, errors)
        if len(oms) > 1:
            raise AtcError(f"atc wrote several oms ({', '.join(p.name for p in oms)}); expected one")
        for stale in find_om(out_dir, name):
            stale.unlink()
        om_path = out_dir / oms[0].name
        os.replace(oms[0], om_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes = list(toolkit.notes)
    if om_path.name != f"{name}.om":
        notes.append(f"atc named the om {om_path.name}: it runs only on that OS/architecture")
    return AtcResult(
        om_path=om_path, argv=argv, exit_code=result.exit_code, lines=result.lines,
        duration_s=result.duration_s, input_shape=input_shape,
        flags=options.model_flags(input_shape), toolkit_version=toolkit.version, notes=notes,
    )
