"""The base of every CGAN operator: the plumbing they share, in one place.

Modelled on the amazon provider's AwsBaseOperator: the run's workspace URI and the Airflow
connection are parameters here; the workspace store is opened once per task (`self.store`,
through the connection for `s3://`); other stores and objects (the model store, a checkpoint on
S3) are opened the same way (`open_store`, `fetch`); and the fail-fast policy
(operators.failures) wraps every subclass's `execute`, so bad input fails at once without
retries while a flaky store keeps them. A subclass's `execute` says only what its step does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from airflow.sdk import BaseOperator

from operators.artifact_store import DEFAULT_CONN_ID, fetch_checkpoint, open_artifact_store
from operators.failures import fail_fast_on_bad_input


class CganBaseOperator(BaseOperator):
    """Shared parameters of every CGAN operator.

    :param workspace: the run's workspace in the artifact store (file:///abs/dir or
        s3://bucket/prefix), as the DAG's `plan` task lays it out (cgan.layout.workspace)
    :param aws_conn_id: Airflow connection (type aws) used for every s3:// store and object
    """

    template_fields: Sequence[str] = ("workspace",)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "execute" in cls.__dict__ and not getattr(cls.__dict__["execute"], "_fail_fast", False):
            wrapped = fail_fast_on_bad_input(cls.__dict__["execute"])
            wrapped._fail_fast = True
            setattr(cls, "execute", wrapped)  # noqa: B010 (mypy: no assignment to a method)

    def __init__(self, *, workspace: str, aws_conn_id: str = DEFAULT_CONN_ID, **kwargs):
        super().__init__(**kwargs)
        self.workspace = workspace
        self.aws_conn_id = aws_conn_id

    @functools.cached_property
    def store(self):
        """The run's workspace, opened once per task."""
        return self.open_store(self.workspace)

    def open_store(self, uri: str):
        """Any artifact store (the model store, the atc cache) through this task's connection."""
        return open_artifact_store(uri, self.aws_conn_id)

    def fetch(self, uri: str, local: str | Path) -> Path:
        """Copy one object named by its full URI (`<store uri>/<key>`) to a local path."""
        folder, name = uri.rsplit("/", 1)  # s3://bucket/a/b.onnx -> s3://bucket/a, b.onnx
        return self.open_store(folder).get_file(name, Path(local))

    def local_checkpoint(self, checkpoint: str, local_dir: str | Path) -> Path:
        """The run's checkpoint on local disk (s3:// downloaded, a path resolved)."""
        return fetch_checkpoint(checkpoint, local_dir, self.aws_conn_id)
