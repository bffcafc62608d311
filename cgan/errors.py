"""Errors a user can act on: each message names the problem and the fix."""


class CganError(Exception):
    """Base class for every error this library raises on purpose."""


class CheckpointError(CganError):
    """A checkpoint file is missing, unreadable, unsafe or belongs to another model."""


class InputBinError(CganError):
    """An input or output bin does not follow the byte contract."""


class ExportError(CganError):
    """ONNX export or its self-check failed."""


class InferenceError(CganError):
    """A runtime failed or produced incomplete outputs."""
