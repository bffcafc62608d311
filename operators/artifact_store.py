"""Opening the run's artifact store from inside a task.

`s3://` stores get their boto3 client from the Airflow connection (default `cgan_s3`) through
the amazon provider's S3Hook, so credentials live in Airflow connections or the environment
and never in task arguments or logs; `file://` stores need nothing.
"""

from __future__ import annotations

DEFAULT_CONN_ID = "cgan_s3"


def open_artifact_store(uri: str, aws_conn_id: str = DEFAULT_CONN_ID):
    from cgan.storage.store import open_store

    if uri.startswith("s3://"):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return open_store(uri, s3_client=S3Hook(aws_conn_id=aws_conn_id).get_conn())
    return open_store(uri)


def fetch_checkpoint(checkpoint: str, local_dir, aws_conn_id: str = DEFAULT_CONN_ID):
    """A local path of the run's checkpoint: s3://bucket/key is downloaded, a path is resolved
    against the project root (so the default `models/cgan_generator.pth` works anywhere)."""
    from pathlib import Path, PurePosixPath

    from cgan.run.plan import resolve_local_checkpoint, validate_checkpoint

    validate_checkpoint(checkpoint)
    if checkpoint.startswith("s3://"):
        folder, name = checkpoint.rsplit("/", 1)
        store = open_artifact_store(folder if folder.count("/") > 2 else folder + "/", aws_conn_id)
        return store.get_file(name, Path(local_dir) / PurePosixPath(name).name)
    return resolve_local_checkpoint(checkpoint)


def open_pack_stager(bucket: str | None, run_prefix: str | None, aws_conn_id: str = DEFAULT_CONN_ID):
    """A cgan.run.staging.BucketPacks for one inference task try (its packs straight to the publish
    bucket, through the connection's client), or None without a bucket (packs into the workspace)."""
    if not bucket:
        return None
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from cgan.run.staging import BucketPacks
    from cgan.storage import s3
    from cgan.storage.keys import StoreError

    if not run_prefix:
        raise StoreError("an inference task given a publish bucket needs the run's run_prefix (runs/<run key>) too")
    client = S3Hook(aws_conn_id=aws_conn_id).get_conn()
    try:
        s3.check_bucket(client, bucket)  # wrong credentials or no bucket: fail before any inference
    except s3.S3ConfigError as exc:
        raise StoreError(f"{exc} [connection {aws_conn_id!r}, bucket {bucket!r}: the publish bucket, where the "
                         "inference tasks stage the grids]") from exc
    return BucketPacks(client, bucket, run_prefix)
