"""Opening the run's artifact store from inside a task.

`s3://` stores get their boto3 client from the Airflow connection (default `cgan_s3`) through
the amazon provider's S3Hook, so credentials live in Airflow connections or the environment
and never in task arguments or logs; `file://` stores need nothing.
"""

from __future__ import annotations

DEFAULT_CONN_ID = "cgan_s3"


def open_artifact_store(uri: str, aws_conn_id: str = DEFAULT_CONN_ID):
    from cgan.store import open_store

    if uri.startswith("s3://"):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return open_store(uri, s3_client=S3Hook(aws_conn_id=aws_conn_id).get_conn())
    return open_store(uri)


def fetch_checkpoint(checkpoint: str, local_dir, aws_conn_id: str = DEFAULT_CONN_ID):
    """A local path of the run's checkpoint: s3://bucket/key is downloaded, a path is resolved
    against the project root (so the default `models/cgan_generator.pth` works anywhere)."""
    from pathlib import Path, PurePosixPath

    from cgan.run_params import resolve_local_checkpoint, validate_checkpoint

    validate_checkpoint(checkpoint)
    if checkpoint.startswith("s3://"):
        folder, name = checkpoint.rsplit("/", 1)
        store = open_artifact_store(folder if folder.count("/") > 2 else folder + "/", aws_conn_id)
        return store.get_file(name, Path(local_dir) / PurePosixPath(name).name)
    return resolve_local_checkpoint(checkpoint)
