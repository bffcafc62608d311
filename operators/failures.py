"""How operators report the library's errors: bad input fails at once, without retries.

The one place that turns the library's retry semantics into Airflow's: each error class says
whether a retry may fix it (`CganError.retryable`, set where the class is defined), and a
CganError that a retry cannot fix becomes AirflowFailException (no retry; its message logged as
one line, without the library's traceback); everything else (a flaky store, a killed worker,
msame on a busy device, any exception that is not a CganError) keeps the task's retries.

So a missing checkpoint, an invalid parameter, a malformed bin, a bad setting, wrong
credentials or a missing bucket fail at once, and so does atc's verdict on a model (atc is
deterministic), unless atc was killed by a signal (AtcError.retryable is then True); a store
that is down or answers 5xx keeps the retries.
"""

from __future__ import annotations

import functools
import logging

from cgan.errors import CganError


def is_retryable(exc: BaseException) -> bool:
    """Whether a retry of the task may fix exc: its `retryable` for a CganError, True for anything else."""
    return bool(getattr(exc, "retryable", True)) if isinstance(exc, CganError) else True


def fail_fast_on_bad_input(execute):
    @functools.wraps(execute)
    def wrapper(self, context):
        try:
            return execute(self, context)
        except CganError as exc:
            if is_retryable(exc):
                raise
            from airflow.sdk.exceptions import AirflowFailException

            # our own refusal: one clear line first, then Airflow's failure record without the
            # library's frames (the message names the problem and the fix; Airflow 3.3 logs every
            # failure with its traceback, so its own frames still follow)
            message = f"{type(exc).__name__}: {exc}"
            (getattr(self, "log", None) or logging.getLogger(__name__)).error("%s", message)
            raise AirflowFailException(message) from None

    return wrapper
