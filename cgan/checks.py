"""Checks of numbers that come from outside (environment variables, forms): one home for the rule and its message."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

_Number = TypeVar("_Number", int, float)


def env_number(name: str, default: object, lo: _Number, hi: _Number, unit: str, kind: type[_Number], *,
               env: Mapping[str, str] | None = None, error: type[Exception]) -> _Number:
    """The number in environment variable `name` (`default` when unset or empty), of `kind` (int:
    digits only; float), in lo..hi; else `error` naming the variable, its value, the unit and the range."""
    raw = (os.environ if env is None else env).get(name) or str(default)
    try:
        value = kind(raw) if kind is float or raw.isdigit() else None
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        what = "a whole number" if kind is int else "a number"
        raise error(f"{name}={raw!r} must be {what} of {unit} in {lo}..{hi}")
    return value
