"""Errors a user can act on: each message names the problem and the fix."""


class CganError(Exception):
    """Base class for every error this library raises on purpose."""

    retryable: bool = True  # may a retry of the task fix it? False where it cannot (operators.failures fails fast)


class CheckpointError(CganError):
    """A checkpoint file is missing, unreadable, unsafe or belongs to another model."""

    retryable = False


class InputBinError(CganError):
    """An input or output bin does not follow the byte contract."""

    retryable = False


class ExportError(CganError):
    """ONNX export or its self-check failed."""

    retryable = False


class InferenceError(CganError):
    """A runtime failed or produced incomplete outputs."""
