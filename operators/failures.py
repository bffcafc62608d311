"""How operators report the library's errors: bad input fails at once, without retries.

A missing checkpoint, an invalid parameter or a malformed bin will not fix itself on a retry,
so those errors become AirflowFailException (no retry, message in the task log); everything
else (a flaky store, a killed worker) keeps the task's retries.
"""

from __future__ import annotations

import functools

from cgan.ascend.errors import AscendError
from cgan.errors import CheckpointError, ExportError, InputBinError
from cgan.run_params import ParamError
from cgan.store import StoreError

NOT_RETRYABLE = (AscendError, CheckpointError, ExportError, InputBinError, ParamError, StoreError)


def fail_fast_on_bad_input(execute):
    @functools.wraps(execute)
    def wrapper(self, context):
        try:
            return execute(self, context)
        except NOT_RETRYABLE as exc:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper
