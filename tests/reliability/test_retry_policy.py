"""Which failures spend the task's retries: only those a retry can fix."""

import pytest
from airflow.sdk.exceptions import AirflowFailException

from cgan.ascend.errors import AscendError, AtcError, MsameError
from cgan.errors import CheckpointError, InferenceError
from cgan.publishing.publish import PublishConfigError, PublishError
from cgan.run.plan import ParamError
from cgan.settings import ConfigError
from cgan.storage.keys import StoreError
from operators.failures import fail_fast_on_bad_input, is_retryable


@pytest.mark.parametrize("exc, retryable", [
    (AtcError("atc failed with exit code 1", codes=["EZ3003"], exit_code=1), False),  # same model, same E-code
    (AtcError("atc exited 0 but never printed 'ATC run success'", exit_code=0), False),
    (AtcError("atc did not finish within 60 s and was stopped", exit_code=-9), True),  # timeout / OOM killer
    (AtcError("atc wrote several oms"), False),
    (MsameError("msame printed [ERROR] lines", exit_code=0), True),  # a busy or resetting NPU may recover
    (InferenceError("shard 0 is incomplete"), True),
    (PublishError("upload failed (EndpointConnectionError)"), True),  # the store may come back
    (PublishConfigError("cannot use bucket (403: Forbidden)"), False),
    (PublishError("upload of s3://b/k failed (404: Not Found)"), True),  # a 404 after an upload is not "no bucket"
    (CheckpointError("refused to load"), False),
    (ParamError("num_grids must be"), False),
    (StoreError("unsafe key"), False),
    (ConfigError("CGAN_ARTIFACT_ROOT"), False),
    (AscendError("not an Ascend SoC name"), False),
    (OSError("No space left on device"), True),
])
def test_retry_policy(exc, retryable):
    assert is_retryable(exc) is retryable

    class Op:
        @fail_fast_on_bad_input
        def execute(self, context):
            raise exc

    with pytest.raises(type(exc) if retryable else AirflowFailException) as err:
        Op().execute({})
    if not retryable:
        assert str(err.value).startswith(f"{type(exc).__name__}: ") and err.value.__cause__ is exc


@pytest.mark.parametrize("code, status, config", [
    ("403", 403, True), ("AccessDenied", 403, True), ("InvalidAccessKeyId", 403, True),
    ("SignatureDoesNotMatch", 403, True), ("NoSuchBucket", 404, True), ("301", 301, True),
    ("404", 404, False),  # e.g. HeadObject right after an upload: not "no such bucket"
    ("500", 500, False), ("SlowDown", 503, False), ("InternalError", 500, False),
])
def test_which_s3_errors_are_configuration(code, status, config):
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    from cgan.storage.s3 import is_config_error

    exc = ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")
    assert is_config_error(exc) is config
    assert is_config_error(NoCredentialsError()) is True
    assert is_config_error(EndpointConnectionError(endpoint_url="http://x")) is False
