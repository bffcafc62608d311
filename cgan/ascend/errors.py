"""Errors of the Ascend wrappers; every message says what went wrong and what to do."""

from cgan.errors import CganError, InferenceError


class AscendError(CganError):
    """A bad argument or a missing toolchain piece, found before any tool ran."""

    retryable = False


class ToolchainNotFound(AscendError):
    """set_env.sh, atc, msame or npu-smi is not where it was looked for."""


class AtcError(CganError):
    """atc ran and did not produce an om (or lied about it). Carries what atc printed.

    Not retryable: atc is deterministic (the same ONNX, flags and toolkit give the same E-code on
    every try), unless atc was killed by a signal (exit_code < 0: a timeout, the OOM killer),
    which a retry may not meet again."""

    retryable = False

    def __init__(self, message: str, *, codes: list[str] | None = None,
                 error_lines: list[str] | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.codes = list(codes or [])
        self.error_lines = list(error_lines or [])
        self.exit_code = exit_code
        self.retryable = exit_code is not None and exit_code < 0


class MsameError(InferenceError):
    """msame ran and the run is not complete and correct. Carries msame's own error lines."""

    def __init__(self, message: str, *, error_lines: list[str] | None = None,
                 exit_code: int | None = None):
        super().__init__(message)
        self.error_lines = list(error_lines or [])
        self.exit_code = exit_code


class NoFreeNpu(CganError):
    """Every NPU this task may use on its host stayed leased for the whole wait (a retry may find one)."""


class AisBenchError(InferenceError):
    """ais_bench (aclruntime) could not open the device or load the om, or an execute failed."""


class OmNotForThisHost(AscendError):
    """The om was built for another chip than this host's NPUs (npu-smi's Name): no retry, the fix
    is one om per chip and a queue per kind of host."""
