"""Publishing a finished run to object storage, manifest last.

Layout (bucket from config): `runs/<run id>/grids/*.png`, `runs/<run id>/perf/*`,
`runs/<run id>/quality/quality.json`, then `runs/<run id>/manifest.json` (key, size and sha256
of every object, the params, model hashes, tool versions), then `latest.json` at the bucket
root naming the newest manifest. A run is published only when its manifest exists: uploads
are checked (small objects by the server against Content-MD5, multipart ones by size) before
the manifest is written, and a retry overwrites the same keys, so it never duplicates objects
nor writes a manifest for objects that are not there.

A re-publish of a prefix that already holds a manifest (a retry, a cleared run) first deletes
that manifest, so while objects are being overwritten the run reads as not published instead
of as a whole run whose hashes no longer match; objects under the prefix that the new run does
not have are deleted before its manifest is written, so the prefix holds exactly the manifest's
objects. Wrong credentials or a missing bucket raise PublishConfigError (a retry cannot help);
a store that is down or failing raises PublishError (a retry may).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cgan.errors import CganError
from cgan.progress import is_tenth
from cgan.store import check_bucket, check_key, join

MANIFEST_NAME = "manifest.json"
LATEST_NAME = "latest.json"
SECTIONS = ("grids", "perf", "quality")
MULTIPART_THRESHOLD = 8 * 1024 * 1024
PUBLISH_THREADS = 8

Log = Callable[[str], None]


class PublishError(CganError):
    """The object store refused or lost an upload; nothing was marked published."""


class PublishConfigError(PublishError):
    """The object store refused the credentials or has no such bucket: fix the configuration."""


# S3 error codes that a retry cannot fix: credentials, rights, bucket, region. (A bare 404 is
# not among them: only HeadBucket's 404 means "no such bucket"; see check_bucket_exists.)
CONFIG_ERROR_CODES = {"403", "301", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                      "NoSuchBucket", "AllAccessDisabled", "InvalidBucketName", "PermanentRedirect",
                      "AuthorizationHeaderMalformed", "InvalidToken", "ExpiredToken", "AccountProblem"}


@dataclass
class Published:
    bucket: str
    prefix: str
    manifest_key: str
    objects: int
    bytes: int

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish_run(
    workspace, client, bucket: str, run_prefix: str, *, metadata: dict, log: Log = print,
    tmp_dir: str | Path,
) -> Published:
    """Copy grids/, perf/ and quality/ of the workspace store to s3://bucket/run_prefix/."""
    from boto3.s3.transfer import TransferConfig

    check_bucket(bucket)
    check_key(run_prefix)
    transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD)
    check_bucket_exists(client, bucket)
    objects, total_bytes = [], 0
    keys = [k for section in SECTIONS for k in workspace.list(section)]
    if not any(k.startswith("grids/") for k in keys) or "quality/quality.json" not in keys:
        raise PublishError("the workspace has no grids or no quality report: postprocess did not finish")
    manifest_key = join(run_prefix, MANIFEST_NAME)
    if _exists(client, bucket, manifest_key):
        _delete(client, bucket, [manifest_key])
        log(f"re-publishing s3://{bucket}/{run_prefix}/: its old manifest was removed first, so the "
            "run reads as not published until the new one is written")
    def upload(key: str) -> dict:
        local = workspace.get_file(key, Path(tmp_dir) / "publish" / key)
        target = join(run_prefix, key)
        try:
            size = local.stat().st_size
            if size < MULTIPART_THRESHOLD:  # one PUT, checked by the server against Content-MD5
                data = local.read_bytes()
                data_sha = hashlib.sha256(data).hexdigest()
                try:
                    client.put_object(Bucket=bucket, Key=target, Body=data, ContentType=_content_type(key),
                                      ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode())
                except Exception as exc:
                    raise _error(exc, f"upload of s3://{bucket}/{target} failed") from exc
                return {"key": target, "size": size, "sha256": data_sha}
            data_sha = _sha256_file(local)
            try:
                client.upload_file(str(local), bucket, target, Config=transfer,
                                   ExtraArgs={"ContentType": _content_type(key)})
                head = client.head_object(Bucket=bucket, Key=target)
            except Exception as exc:
                raise _error(exc, f"upload of s3://{bucket}/{target} failed") from exc
        finally:
            local.unlink(missing_ok=True)
        if head["ContentLength"] != size:
            raise PublishError(f"s3://{bucket}/{target} has {head['ContentLength']} bytes, expected {size}")
        return {"key": target, "size": size, "sha256": data_sha}

    # Uploads are I/O bound: a few in flight at once; results come back in key order.
    with ThreadPoolExecutor(max_workers=PUBLISH_THREADS, thread_name_prefix="publish") as pool:
        for n, obj in enumerate(pool.map(upload, keys), 1):
            objects.append(obj)
            total_bytes += obj["size"]
            if is_tenth(n, len(keys)):
                log(f"published {n}/{len(keys)} objects")
    stray = sorted(set(_list(client, bucket, run_prefix)) - {o["key"] for o in objects})
    if stray:
        _delete(client, bucket, stray)
        log(f"removed {len(stray)} object(s) under s3://{bucket}/{run_prefix}/ that this run does not "
            f"have (first: {stray[0]})")
    manifest = dict(metadata, objects=objects, published_at=_now())
    _put_json(client, bucket, manifest_key, manifest)
    _update_latest(client, bucket, manifest_key, metadata.get("logical_date"), log)
    return Published(bucket, run_prefix, manifest_key, len(objects), total_bytes)


def check_bucket_exists(client, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None) or "the default AWS endpoint"
        error = _error(exc, f"cannot use bucket s3://{bucket}/ at {endpoint}")
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if hasattr(exc, "response") else ""
        if code in ("404", "NoSuchBucket"):
            error = PublishConfigError(str(error))
            hint = ("no such bucket: create the bucket, or point CGAN_PUBLISH_BUCKET at one that exists "
                    "(and the connection's endpoint at the right store)")
        elif isinstance(error, PublishConfigError):
            hint = ("access refused: the connection's credentials (login = access key id, password = "
                    "secret key) are wrong or have no rights on this bucket; fix the connection, or "
                    "create the bucket if it does not exist")
        else:
            hint = "the object store did not answer as expected; the task's retries will try again"
        raise type(error)(f"{error}: {hint}") from exc


def is_config_error(exc: BaseException) -> bool:
    """True for failures a retry cannot fix: no or wrong credentials, no rights, no bucket."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return True
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in CONFIG_ERROR_CODES or status in (301, 403)
    return False


def _error(exc: BaseException, what: str) -> PublishError:
    cls = PublishConfigError if is_config_error(exc) else PublishError
    return cls(f"{what} ({_describe(exc)})")


def _exists(client, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise _error(exc, f"cannot check s3://{bucket}/{key}") from exc
    except Exception as exc:
        raise _error(exc, f"cannot check s3://{bucket}/{key}") from exc


def _list(client, bucket: str, prefix: str) -> list[str]:
    try:
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys
    except Exception as exc:
        raise _error(exc, f"cannot list s3://{bucket}/{prefix}/") from exc


def _delete(client, bucket: str, keys: list[str]) -> None:
    try:
        for i in range(0, len(keys), 1000):
            answer = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise PublishError(f"deleting s3://{bucket}/{first.get('Key')} failed: "
                                   f"{first.get('Code')}: {first.get('Message')}")
    except PublishError:
        raise
    except Exception as exc:
        raise _error(exc, f"deleting {len(keys)} object(s) from s3://{bucket}/ failed") from exc


def _update_latest(client, bucket: str, manifest_key: str, logical_date: str | None, log: Log) -> None:
    """Point latest.json at this manifest unless it already names a newer run."""
    try:
        current = read_json(client, bucket, LATEST_NAME)
    except NotJsonError as exc:
        log(f"latest.json is replaced: {exc}")
        current = None
    current = current if isinstance(current, dict) else {}
    newest = current.get("logical_date") or ""
    if logical_date and newest > logical_date:
        log(f"latest.json kept: it names a newer run ({current.get('manifest')})")
        return
    _put_json(client, bucket, LATEST_NAME, {"manifest": manifest_key, "logical_date": logical_date,
                                             "updated_at": _now()})


class NotJsonError(PublishError):
    """An object that should hold JSON does not."""


def read_json(client, bucket: str, key: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise _error(exc, f"cannot read s3://{bucket}/{key}") from exc
    except Exception as exc:
        raise _error(exc, f"cannot read s3://{bucket}/{key}") from exc
    try:
        return json.loads(body)
    except ValueError as exc:
        raise NotJsonError(f"s3://{bucket}/{key} is not JSON ({exc})") from exc


def _put_json(client, bucket: str, key: str, obj: dict) -> None:
    try:
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(obj, indent=2).encode(),
                          ContentType="application/json")
    except Exception as exc:
        raise _error(exc, f"writing s3://{bucket}/{key} failed") from exc


def _describe(exc: BaseException) -> str:
    error = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
    return f"{error.get('Code')}: {error.get('Message')}" if error else f"{type(exc).__name__}: {exc}"


def _sha256_file(path: Path) -> str:
    from cgan.artifacts import sha256_file

    return sha256_file(path)


def _content_type(key: str) -> str:
    return {"png": "image/png", "json": "application/json", "log": "text/plain", "txt": "text/plain"}.get(
        key.rsplit(".", 1)[-1], "application/octet-stream")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


TOOL_PACKAGES = ("cgan-airflow", "torch", "onnx", "onnxsim", "onnxruntime", "numpy", "pillow",
                 "apache-airflow", "boto3")


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in TOOL_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def build_metadata(*, run_id: str, logical_date: str | None, params: dict, export: dict | None,
                   convert: dict | None, postprocess: dict | None) -> dict:
    """The manifest's description of a run: what was asked, with which model and tools."""
    model = {}
    if export:
        model.update({k: export.get(k) for k in ("checkpoint_sha256", "onnx_sha256", "channels", "batch", "opset",
                                                 "export_max_abs_err")})
    if convert:
        model.update({k: v for k, v in convert.items() if k in ("om_sha256", "cache_key", "cache_hit",
                                                              "toolkit_version")})
    tools = tool_versions()
    if convert and convert.get("toolkit_version"):
        tools["cann_toolkit"] = convert["toolkit_version"]
    return {"run_id": run_id, "logical_date": logical_date, "params": params, "model": model,
            "tools": tools, "summary": postprocess or {}}
