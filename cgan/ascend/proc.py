"""Running a tool: an argument list (never a shell), output streamed line by line as it comes.

stderr is merged into stdout (msame prints everything, errors included, on stdout; atc prints
flag errors on stderr), so the one stream keeps the tool's own order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cgan.ascend.errors import ToolchainNotFound

LineSink = Callable[[str], None]


@dataclass
class ToolResult:
    argv: list[str]
    exit_code: int
    lines: list[str]
    duration_s: float
    timed_out: bool = False

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def run_streaming(
    argv: list[str],
    *,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    on_line: LineSink | None = None,
    timeout_s: float | None = None,
    pass_fds: tuple[int, ...] = (),
) -> ToolResult:
    """Run argv (a list, shell=False), pass each output line to on_line as soon as it is read.
    `pass_fds`: descriptors the tool inherits (an NPU lease's lock, held while the tool lives)."""
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise TypeError("argv must be a list of strings")
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=dict(env) if env is not None else None, shell=False,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, encoding="utf-8", errors="replace", bufsize=1,
            start_new_session=True,  # its own process group: a timeout kills atc's children too
            pass_fds=pass_fds,
        )
    except OSError as exc:
        raise ToolchainNotFound(f"cannot run {argv[0]}: {exc}") from exc
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        _kill_group(proc)

    timer = threading.Timer(timeout_s, kill) if timeout_s else None
    if timer:
        timer.daemon = True
        timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\r\n")
            lines.append(line)
            if on_line is not None:
                on_line(line)
        exit_code = proc.wait()
    finally:
        if timer:
            timer.cancel()
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
    return ToolResult(argv=list(argv), exit_code=exit_code, lines=lines,
                      duration_s=time.monotonic() - start, timed_out=timed_out.is_set())


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
