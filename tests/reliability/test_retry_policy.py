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
        assert str(err.value).startswith(f"{type(exc).__name__}: ") and err.value.__context__ is exc  # not printed


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


# Every CganError subclass of cgan/ and its retry decision (`retryable`, set where the class is
# defined; operators.failures reads it). A new class fails test_every_error_class_has_a_retry_decision
# until it is entered here: decide whether a retry of the task can fix it.
RETRY_DECISIONS = {
    "cgan.errors.CheckpointError": False,
    "cgan.errors.InputBinError": False,
    "cgan.errors.ExportError": False,
    "cgan.errors.InferenceError": True,  # a runtime on a busy or resetting device may recover
    "cgan.settings.ConfigError": False,
    "cgan.storage.keys.StoreError": False,  # a bad URI, key or name, a missing artifact, a refused configuration
    "cgan.storage.s3.S3Error": True,  # store down, 5xx, throttled
    "cgan.storage.s3.S3ConfigError": False,  # credentials, rights, bucket, region (kind CONFIGURATION)
    "cgan.storage.s3.S3Missing": True,  # the adapters decide what a missing object means (StoreError, PublishError)
    "cgan.storage.s3.S3ClockSkew": True,  # a worker 15+ min off the store's clock: another worker, or NTP, fixes it
    "cgan.storage.s3.S3PreconditionFailed": True,  # another writer won: read again
    "cgan.ascend.errors.AscendError": False,
    "cgan.ascend.errors.ToolchainNotFound": False,
    "cgan.ascend.toolkit.ToolkitNotFound": False,  # no set_env.sh where looked: install CANN or set the override
    "cgan.ascend.errors.AtcError": False,  # but an instance killed by a signal (exit_code < 0) is retryable
    "cgan.ascend.errors.MsameError": True,
    "cgan.ascend.errors.NoFreeNpu": True,  # a retry may find a free NPU
    "cgan.ascend.errors.OmNotForThisHost": False,  # one om per chip: configuration, not luck
    "cgan.ascend.errors.AisBenchError": True,
    "cgan.run.plan.ParamError": False,
    "cgan.run.shard.ShardError": False,
    "cgan.layout.packs.PackError": False,  # a damaged, foreign or partial pack or index: the same bytes again
    "cgan.quality.gate.QualityGateFailed": False,  # the same outputs get the same verdict
    "cgan.quality.gate.ThresholdError": False,
    "cgan.publishing.publish.PublishError": True,
    "cgan.publishing.publish.PublishConfigError": False,
    "cgan.publishing.publish.StagedGridsError": False,  # the shard's inference task must run again
    "cgan.publishing.gallery.GalleryError": False,  # a damaged published object
    "cgan.publishing.gallery.NotFound": False,
    "cgan.publishing.gallery.Missing": False,  # a pack the manifest names is gone: the gallery reads the manifest again
    "cgan.publishing.gallery.StoreUnavailable": True,
    "cgan.integrations.airflow_api.AirflowApiError": True,  # the API may be reachable again
}


def all_error_classes() -> dict[str, type]:
    import importlib
    import pkgutil

    import cgan
    from cgan.errors import CganError

    for info in pkgutil.walk_packages(cgan.__path__, "cgan."):
        if not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
    found, todo = {}, [CganError]
    while todo:
        for sub in todo.pop().__subclasses__():
            name = f"{sub.__module__}.{sub.__qualname__}"
            if sub.__module__.startswith("cgan.") and name not in found:
                found[name] = sub
                todo.append(sub)
    return found


def test_every_error_class_has_a_retry_decision():
    found = all_error_classes()
    undecided = sorted(set(found) - set(RETRY_DECISIONS))
    assert not undecided, f"decide whether a retry can fix these (set retryable, list them here): {undecided}"
    assert not sorted(set(RETRY_DECISIONS) - set(found)), "RETRY_DECISIONS names a class that does not exist"
    for name, cls in found.items():
        assert cls.retryable is RETRY_DECISIONS[name], name


def test_the_base_error_is_retryable_and_only_library_errors_are_read():
    from cgan.errors import CganError

    class Other(Exception):
        retryable = False

    assert CganError.retryable is True and is_retryable(CganError("x")) is True
    assert is_retryable(Other("not a library error")) is True  # Airflow's retries apply to it as they are


@pytest.mark.parametrize("decision", [False, True])
def test_a_new_error_class_fails_fast_or_keeps_retries_through_the_operator(decision):
    from cgan.errors import CganError
    from operators.base import CganBaseOperator

    class NewError(CganError):
        retryable = decision

    class Step(CganBaseOperator):
        """:param workspace: w\n:param aws_conn_id: c"""

        def execute(self, context):
            raise NewError("something went wrong: do this")

    assert is_retryable(NewError("x")) is decision
    with pytest.raises(NewError if decision else AirflowFailException) as err:
        Step(task_id="s", workspace="file:///w").execute({})
    if not decision:
        assert str(err.value) == "NewError: something went wrong: do this"
        assert isinstance(err.value.__context__, NewError)


def test_an_instance_can_decide_for_itself():
    class Op:
        @fail_fast_on_bad_input
        def execute(self, context):
            raise self.error

    op = Op()
    op.error = AtcError("atc was killed", exit_code=-9)
    with pytest.raises(AtcError):
        op.execute({})
    op.error = AtcError("atc failed", exit_code=1)
    with pytest.raises(AirflowFailException, match="AtcError: atc failed"):
        op.execute({})
