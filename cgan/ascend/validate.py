"""Checks of every value that reaches atc, msame or npu-smi, run before the tool starts.

The tools run without a shell, so metacharacters cannot inject commands; they are still refused
in paths because msame splits `--input` on commas and trims spaces, a leading '-' would be read
as a flag, and a path a shell would mangle is a path a user copying the logged command cannot
reuse.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cgan.ascend.errors import AscendError

# Ascend + 3-digit chip + optional variant (310P3, 910B1, 910ProB, 910B4-1, 910B2C), or the A3
# form <ChipName>_<NPUName> (Ascend910_9391). Matches `Ascend` + npu-smi's Name column.
SOC_VERSION_RE = re.compile(r"^Ascend\d{3}[A-Za-z0-9]{0,12}(?:-\d{1,2})?(?:_\d{4}[A-Za-z0-9]{0,4})?\Z")
SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9_./+=@%-]+\Z")
# GE util.cc CheckInputPathValid / CheckOutputPathValid on the realpath, else E10001
ATC_PATH_RE = re.compile(r"^[\u4e00-\u9fa5A-Za-z0-9./_-]+\Z")
MAX_DEVICE = 255
MAX_LOOP = 100


def check_soc_version(value: object) -> str:
    if not isinstance(value, str) or not SOC_VERSION_RE.fullmatch(value):
        raise AscendError(
            f"soc_version {value!r} is not an Ascend SoC name: use 'Ascend' + the Name column of "
            "`npu-smi info` (e.g. Ascend310, Ascend310P3, Ascend310B4, Ascend910B1) or the A3 "
            "form <ChipName>_<NPUName> (e.g. Ascend910_9391)"
        )
    return value


def _int_in(value: object, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise AscendError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def check_device(value: object) -> int:
    """An ACL device id (msame --device): 0..255 (cgan.ascend.inventory says which exist)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_DEVICE:
        raise AscendError(
            f"device must be an integer in 0..{MAX_DEVICE}, got {value}: use the Device column of "
            "`npu-smi info` (the ACL device id), not the NPU column (an Atlas 300 card shows NPU "
            "ids such as 2048 while its devices are 0..3)"
        )
    return _int_in(value, "device", 0, MAX_DEVICE)


def check_loop(value: object) -> int:
    """msame --loop: 1..100 (msame itself exits 0 with an [ERROR] line outside that range)."""
    return _int_in(value, "loop", 1, MAX_LOOP)


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise AscendError(f"{name} {value!r} is not one of {', '.join(choices)}")
    return value


def check_path(path: str | os.PathLike, what: str) -> Path:
    """An absolute, shell-safe path: letters, digits and _./+=@%- only, no part starting with '-'."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise AscendError(f"{what}: empty path")
    absolute = os.path.abspath(text)
    if not SAFE_PATH_RE.fullmatch(absolute) or any(p.startswith("-") for p in absolute.split("/")):
        raise AscendError(
            f"{what} {text!r} has characters the Ascend tools cannot take safely (spaces, commas, "
            "quotes, shell metacharacters, or a part starting with '-'); use letters, digits and "
            "_./+=@%- only"
        )
    return Path(absolute)


def check_atc_path(path: str | os.PathLike, what: str) -> Path:
    """A path atc accepts: check_path, and its realpath (symlinks resolved, as atc does) made
    of letters, digits, Chinese characters and ./_- only (no + = @ %), atc's own pattern."""
    checked = check_path(path, what)
    real = os.path.realpath(checked)
    if not ATC_PATH_RE.fullmatch(real):
        bad = " ".join(sorted({c for c in real if not ATC_PATH_RE.fullmatch(c)}))
        raise AscendError(
            f"{what} {real!r} has characters atc refuses ({bad}): atc accepts only letters, digits, "
            "Chinese characters and ./_- in the real path (symlinks resolved) and fails with "
            "E10001 otherwise; use a folder whose path has only those"
        )
    return checked


def check_executable(program: str | os.PathLike, what: str) -> str:
    """A tool given by name (looked up on PATH later) or by a safe path."""
    text = os.fspath(program)
    if isinstance(text, str) and "/" not in text and re.fullmatch(r"[A-Za-z0-9_.+-]+", text) \
            and not text.startswith("-"):
        return text
    return str(check_path(text, what))
