"""How operators report the library's errors: bad input fails at once, without retries.

A missing checkpoint, an invalid parameter or a malformed bin will not fix itself on a retry,
so those errors become AirflowFailException (no retry, message in the task log); everything
else (a flaky store, a killed worker, msame on a busy device) keeps the task's retries.

atc is deterministic: the same ONNX, flags and toolkit give the same E-code on every try, so
an AtcError fails at once too, unless atc was killed by a signal (a timeout, the OOM killer),
which a retry may not meet again. A publish refused for configuration (wrong credentials, a
missing bucket) fails at once; a store that is down or answers 5xx keeps the retries.
"""

from __future__ import annotations

import functools

from cgan.ascend.errors import AscendError, AtcError
from cgan.errors import CheckpointError, ExportError, InputBinError
from cgan.publishing.publish import PublishConfigError
from cgan.run.plan import ParamError
from cgan.settings import ConfigError
from cgan.storage.keys import StoreError

NOT_RETRYABLE = (AscendError, AtcError, CheckpointError, ConfigError, ExportError, InputBinError,
                 ParamError, PublishConfigError, StoreError)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, AtcError) and exc.exit_code is not None and exc.exit_code < 0:
        return True  # atc killed by a signal (timeout, OOM killer): not atc's verdict on the model
    return not isinstance(exc, NOT_RETRYABLE)


def fail_fast_on_bad_input(execute):
    @functools.wraps(execute)
    def wrapper(self, context):
        try:
            return execute(self, context)
        except NOT_RETRYABLE as exc:
            if is_retryable(exc):
                raise
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper
