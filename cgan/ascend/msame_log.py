"""Reading what msame printed: its timings (every variant), its errors, its output folder line.

Timing lines msame has printed (all on stdout):
    Inference time: 2.5542ms                                   one per call (per loop / file)
    Inference average time: 2.554200 ms                        file input, %f
    Inference average time without first time: 2.547842 ms     file input, loop > 1
    Inference average time : 2.55 ms                           folder input, %.2f
    Inference average time without first time: 2.55 ms        folder input, > 1 file
The regexes accept any spacing around the colon and any float notation.
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
