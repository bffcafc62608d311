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
        """The run's checkpoint on local disk (s3:// downloaded, a path resolved), checked against
        the checkpoint roots (CGAN_CHECKPOINT_ROOTS) here, where it is read, not only in `plan`:
        the file or a folder on its path replaced by a symlink out of the roots since `plan` ran
        (or a checkpoint XCom edited since) is refused (ParamError: no retry). A local path comes
        back resolved, symlinks followed, so the task reads the file that was checked, not what a
        link names by the time it opens it."""
        from cgan import settings
        from cgan.run.plan import ParamError, check_checkpoint_root

        roots = settings.checkpoint_roots()
        if checkpoint.startswith("s3://"):
            check_checkpoint_root(checkpoint, roots)
            return fetch_checkpoint(checkpoint, local_dir, self.aws_conn_id)
        path = Path(fetch_checkpoint(checkpoint, local_dir, self.aws_conn_id)).resolve()
        try:
            check_checkpoint_root(str(path), roots)
        except ParamError:
            raise ParamError(
                f"checkpoint {checkpoint!r} leads to {path} (symbolic links followed), outside the checkpoint "
                f"roots ({', '.join(roots)}), so {self.task_id} did not read it. `plan` accepted it against "
                "CGAN_CHECKPOINT_ROOTS, so the file or a folder on its path was replaced by a symbolic link since, "
                "or this worker's CGAN_CHECKPOINT_ROOTS differ from plan's: put the checkpoint file itself (not "
                "a link out of the roots) under one of them and clear the task, or have the deployment add its "
                "folder to CGAN_CHECKPOINT_ROOTS on every worker") from None
        return path
