"""The one S3 adapter under the artifact store, publish and the gallery (boto3 clients, e.g. the
amazon provider's S3Hook.get_conn()). No Airflow import here.

- One classification of failures (`classify`):
  MISSING       NoSuchKey, NotFound, a bare 404 (HEAD answers without a body)
  CLOCK_SKEW    403 RequestTimeTooSkewed, or a bare 403 (a HEAD's) whose Date is 15 minutes or more
                off this worker's clock: the worker signs with a wrong clock; sync it (NTP)
  CONFIGURATION credentials, rights, no such bucket, wrong region: a retry cannot help
  PRECONDITION  a conditional write lost (412 PreconditionFailed)
  RETRYABLE     everything else: store down, timeouts, 5xx, SlowDown, 409 ConditionalRequestConflict
  Requests raise `S3Error` (retryable) or its subclasses S3ConfigError (retryable = False, the
  one kind a retry cannot help), S3ClockSkew (the two clocks and the fix in the message; retryable:
  the retry may run on another worker, or after NTP set this one right), S3Missing,
  S3PreconditionFailed, each with "what failed (Code: Message)".
- One description of a store for messages (`endpoint`, `where`): the endpoint URL without any
  user info, the bucket and the key. Never a credential.
- Writes send Content-MD5 and x-amz-checksum-sha256, so a server that supports either refuses
  a body that does not match (BadDigest); If-Match / If-None-Match on request.
- `probe`: what this server honours (conditional writes, SHA-256 verification), found out once
  per client and bucket with a scratch object, so callers pick the safe path and say which.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime

from cgan.errors import CganError

MISSING, CONFIGURATION, PRECONDITION, RETRYABLE = "missing", "configuration", "precondition", "retryable"
CLOCK_SKEW = "clock_skew"
MAX_SKEW_S = 900  # S3 (AWS, MinIO, SeaweedFS) refuses a request signed more than 15 minutes off its clock
local_clock = time.time  # the worker's clock, the one botocore signs with

MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# A bare 404 is not configuration: only HeadBucket's 404 means "no such bucket" (see check_bucket).
CONFIG_CODES = frozenset({"403", "301", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                          "NoSuchBucket", "AllAccessDisabled", "InvalidBucketName", "PermanentRedirect",
                          "AuthorizationHeaderMalformed", "InvalidToken", "ExpiredToken", "AccountProblem"})
PRECONDITION_CODES = frozenset({"412", "PreconditionFailed"})
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


class S3Error(CganError):
    """A request to the object store failed; a retry may help (store down, 5xx, throttled)."""

    kind = RETRYABLE


class S3ConfigError(S3Error):
    """Credentials, rights, bucket or region are wrong: fix the configuration, a retry cannot help."""

    kind = CONFIGURATION
    retryable = False


class S3ClockSkew(S3Error):
    """The worker's clock is 15 minutes or more off the store's, so the store refuses every request
    it signs (403): sync the worker's clock. Retryable, unlike wrong credentials: the task's retry
    may run on another worker, or on this one once NTP has set its clock right."""

    kind = CLOCK_SKEW


class S3Missing(S3Error):
    """No such object."""

    kind = MISSING


class S3PreconditionFailed(S3Error):
    """A conditional write was refused: the object changed since it was read."""

    kind = PRECONDITION


_ERRORS = {RETRYABLE: S3Error, CONFIGURATION: S3ConfigError, MISSING: S3Missing, PRECONDITION: S3PreconditionFailed,
           CLOCK_SKEW: S3ClockSkew}


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return (response or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None


def _timestamp(text: object) -> float | None:
    """A time as S3 writes it (20250901T162148Z, 2025-09-03T16:21:50Z, .000Z, an HTTP date); None if not one."""
    text = str(text or "").strip()
    for fmt in ("%Y%m%dT%H%M%SZ", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            pass
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def clock_offset(exc: BaseException) -> tuple[float, str] | None:
    """(seconds the store's clock is ahead of this worker's, negative when behind; what shows it)
    from an S3 error answer: AWS's ServerTime against the request's signing time (RequestTime, in
    a RequestTimeTooSkewed body), else the answer's Date header against the worker's clock now.
    None when the answer has neither."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error") or {}
    server, signed = _timestamp(error.get("ServerTime")), _timestamp(error.get("RequestTime"))
    if server is not None and signed is not None:
        return server - signed, (f"the store's clock said {error['ServerTime']} when the request signed at "
                                 f"{error['RequestTime']} by this worker's clock arrived")
    date = ((response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}).get("date")
    server = _timestamp(date)
    if server is None:
        return None
    now = local_clock()
    return server - now, f"the store's Date header: {date}; this worker's clock: {formatdate(now, usegmt=True)}"


def _duration(seconds: float) -> str:
    s = round(abs(seconds))
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s / 86400:.1f} days"


def clock_skew_advice(exc: BaseException) -> str:
    """What a clock-skew refusal means and the fix: the two clocks, their difference, this host."""
    limit_ms = (getattr(exc, "response", None) or {}).get("Error", {}).get("MaxAllowedSkewMilliseconds")
    limit = int(limit_ms) / 1000 if str(limit_ms or "").isdigit() else MAX_SKEW_S
    found = clock_offset(exc)
    if found is None:
        off = "is off the store's"
    else:
        offset, shown = found
        off = f"is {_duration(offset)} {'behind' if offset > 0 else 'ahead of'} the store's ({shown})"
    return (f"clock skew: this worker's clock (host {socket.gethostname()}) {off}, and the store refuses a "
            f"request signed more than {_duration(limit)} off its own clock. Sync the worker's clock with NTP "
            "(chrony: `chronyc tracking` shows the offset, `chronyc makestep` corrects it at once; or "
            "`timedatectl set-ntp true`); a retry succeeds once it is right, or on a worker whose clock is")


def _too_skewed(exc: BaseException) -> bool:
    found = clock_offset(exc)
    return found is not None and abs(found[0]) >= MAX_SKEW_S - 5  # the Date has whole seconds


def classify(exc: BaseException) -> str:
    """MISSING, CLOCK_SKEW, CONFIGURATION, PRECONDITION or RETRYABLE (the module docstring says which is which)."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, S3Error):
        return exc.kind
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CONFIGURATION
    if not isinstance(exc, ClientError):
        return RETRYABLE
    code, status = error_code(exc), http_status(exc)
    if code == "RequestTimeTooSkewed" or (status == 403 and code in ("", "403") and _too_skewed(exc)):
        return CLOCK_SKEW  # a HEAD's 403 has no body to name the code: its Date shows the clocks apart
    if code in CONFIG_CODES or status in (301, 403):
        return CONFIGURATION
    if code in MISSING_CODES or status == 404:
        return MISSING
    if code in PRECONDITION_CODES or status == 412:
        return PRECONDITION
    return RETRYABLE


def is_config_error(exc: BaseException) -> bool:
    return classify(exc) == CONFIGURATION


def is_missing(exc: BaseException) -> bool:
    return classify(exc) == MISSING


def redact(text: str) -> str:
    """Drop user info from URLs in text (http://key:secret@host -> http://***@host)."""
    return _USERINFO.sub("***@", text)


def describe_error(exc: BaseException) -> str:
    """`Code: Message` of an S3 error, `Type: text` of anything else; never a credential."""
    code = error_code(exc)
    if code:
        message = (getattr(exc, "response", None) or {}).get("Error", {}).get("Message")
        return redact(f"{code}: {message}")
    return redact(f"{type(exc).__name__}: {exc}")


def endpoint(client) -> str:
    url = getattr(getattr(client, "meta", None), "endpoint_url", None)
    return redact(url.rstrip("/")) if url else "the default AWS endpoint"


def where(client, bucket: str, key: str = "") -> str:
    """How messages name a place in a store: `s3://bucket/key at http://host:port`."""
    return f"s3://{bucket}/{key} at {endpoint(client)}"


def wrap(exc: BaseException, what: str) -> S3Error:
    """The classified S3Error for exc, saying what failed and why."""
    if isinstance(exc, S3Error):
        return exc
    kind = classify(exc)
    if kind == CLOCK_SKEW:
        return S3ClockSkew(f"{what} ({describe_error(exc)}): {clock_skew_advice(exc)}")
    return _ERRORS[kind](f"{what} ({describe_error(exc)})")


# -- requests ---------------------------------------------------------------------------------

def check_bucket(client, bucket: str) -> None:
    """HeadBucket; a 404 here means no such bucket (configuration, with the fix in the message)."""
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:
        what = f"cannot use bucket s3://{bucket}/ at {endpoint(client)}"
        kind = classify(exc)
        if error_code(exc) in ("404", "NoSuchBucket") or http_status(exc) == 404:
            raise S3ConfigError(f"{what} ({describe_error(exc)}): no such bucket: create the bucket, or point "
                                "CGAN_PUBLISH_BUCKET at one that exists (and the connection's endpoint at "
                                "the right store)") from exc
        if kind == CLOCK_SKEW:
            raise S3ClockSkew(f"{what} ({describe_error(exc)}): {clock_skew_advice(exc)}") from exc
        if kind == CONFIGURATION:
            raise S3ConfigError(f"{what} ({describe_error(exc)}): access refused: the connection's credentials "
                                "(login = access key id, password = secret key) are wrong or have no rights on "
                                "this bucket; fix the connection, or create the bucket if it does not exist") from exc
        raise S3Error(f"{what} ({describe_error(exc)}): the object store did not answer as expected; the "
                      "task's retries will try again") from exc


def head(client, bucket: str, key: str) -> dict | None:
    """HeadObject's answer, None when there is no such object."""
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        error = wrap(exc, f"cannot check s3://{bucket}/{key}")
        if isinstance(error, S3Missing):
            return None
        raise error from exc


def get(client, bucket: str, key: str) -> dict:
    """GetObject's answer (stream in ["Body"]); S3Missing when there is no such object."""
    try:
        return client.get_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise wrap(exc, f"cannot read s3://{bucket}/{key}") from exc


def get_bytes(client, bucket: str, key: str, limit: int | None = None) -> tuple[bytes, str | None]:
    """(body, ETag); S3Error("... larger than limit") when the object is larger than limit."""
    response = get(client, bucket, key)
    body = response["Body"]
    try:
        size = response.get("ContentLength") or 0
        if limit is not None and size > limit:
            raise S3Error(f"s3://{bucket}/{key} has {size} bytes, more than the {limit} read")
        data = body.read() if limit is None else body.read(limit + 1)
    except S3Error:
        raise
    except Exception as exc:
        raise wrap(exc, f"cannot read s3://{bucket}/{key}") from exc
    finally:
        body.close()
    if limit is not None and len(data) > limit:
        raise S3Error(f"s3://{bucket}/{key} is larger than the {limit} bytes read")
    return data, response.get("ETag")


def get_range(client, bucket: str, key: str, offset: int, length: int) -> bytes:
    """Bytes offset..offset+length-1 of an object (fewer where it ends sooner): one ranged GET."""
    if offset < 0 or length < 1:
        raise ValueError(f"bad range: offset {offset}, length {length}")
    try:
        response = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
        body = response["Body"]
        try:
            return body.read()
        finally:
            body.close()
    except Exception as exc:
        raise wrap(exc, f"cannot read s3://{bucket}/{key} at bytes {offset}+{length}") from exc


def checksum_sha256(data: bytes) -> str:
    """The base64 SHA-256 that S3 takes in x-amz-checksum-sha256."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def put_bytes(client, bucket: str, key: str, data: bytes, *, content_type: str | None = None,
              if_match: str | None = None, if_none_match: bool = False) -> str | None:
    """One PUT, checked by the server against Content-MD5 and x-amz-checksum-sha256; with
    if_match (an ETag) or if_none_match (create only) a conditional write. Returns the ETag."""
    args = {"Bucket": bucket, "Key": key, "Body": data,
            "ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "ChecksumSHA256": checksum_sha256(data)}
    if content_type:
        args["ContentType"] = content_type
    if if_match is not None:
        args["IfMatch"] = if_match
    if if_none_match:
        args["IfNoneMatch"] = "*"
    try:
        return client.put_object(**args).get("ETag")
    except Exception as exc:
        raise wrap(exc, f"upload of s3://{bucket}/{key} failed") from exc


def upload_file(client, bucket: str, key: str, path, *, content_type: str | None = None,
                multipart_threshold: int = 8 * 1024 * 1024, threads: bool = True) -> None:
    """A file up to the threshold as one PUT (put_bytes: Content-MD5 and SHA-256 checked by the
    server); a larger one through boto3's transfer manager, multipart, the SDK sending each part's
    SHA-256. The transfer manager costs 5.3 ms of client CPU for a 28.8 KB input bin, the PUT 3.0.
    threads=False: the parts go one after another on the calling thread (whose CPU time then
    counts them; a caller that uploads on a thread of its own)."""
    from boto3.s3.transfer import TransferConfig

    if os.path.getsize(path) <= multipart_threshold:
        with open(path, "rb") as fh:
            put_bytes(client, bucket, key, fh.read(), content_type=content_type)
        return

    extra = {"ChecksumAlgorithm": "SHA256"}
    if content_type:
        extra["ContentType"] = content_type
    try:
        client.upload_file(str(path), bucket, key, ExtraArgs=extra,
                           Config=TransferConfig(multipart_threshold=multipart_threshold, use_threads=threads))
    except Exception as exc:
        cause = exc.__cause__ or exc.__context__ or exc  # boto3's S3UploadFailedError is raised over the ClientError
        raise wrap(cause, f"upload of s3://{bucket}/{key} failed") from exc


def download_file(client, bucket: str, key: str, path, chunk: int = 1 << 20) -> None:
    """One GetObject streamed into path (memory flat at any size). Not boto3's download_file:
    its transfer manager sends a HEAD before the GET and sets up a thread pool for each call,
    8.2 ms of client CPU per 28.8 KB input bin against 2.8 for this (the scheduler write-up)."""
    response = get(client, bucket, key)
    body = response["Body"]
    blocks = body.iter_chunks(chunk)
    try:
        with open(path, "wb") as fh:  # a local write error (disk full) is raised as it is
            while True:
                try:
                    block = next(blocks, None)
                except Exception as exc:  # the connection, mid-body: retryable
                    raise wrap(exc, f"cannot fetch s3://{bucket}/{key}") from exc
                if block is None:
                    break
                fh.write(block)
    finally:
        body.close()


def server_time(client, bucket: str) -> float:
    """The store's clock (the Date header of a HeadBucket answer), as a POSIX timestamp: the
    clock its LastModified times are on, whatever the worker's clock says."""
    try:
        answer = client.head_bucket(Bucket=bucket)
    except Exception as exc:
        raise wrap(exc, f"cannot check s3://{bucket}/") from exc
    date = (answer.get("ResponseMetadata", {}).get("HTTPHeaders") or {}).get("date")
    if not date:
        raise S3Error(f"s3://{bucket}/ answered without a Date header: the store's clock is unknown")
    return parsedate_to_datetime(date).timestamp()


def list_keys(client, bucket: str, prefix: str) -> list[str]:
    """Every key under prefix (give it with its trailing slash to list a folder)."""
    return [obj["Key"] for obj in list_objects(client, bucket, prefix)]


def list_objects(client, bucket: str, prefix: str) -> list[dict]:
    """ListObjectsV2's entries under prefix (Key, Size, LastModified, ...), 1,000 a request."""
    found: list[dict] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.extend(page.get("Contents", []))
    except Exception as exc:
        raise wrap(exc, f"cannot list s3://{bucket}/{prefix}") from exc
    return found


def list_folders(client, bucket: str, prefix: str, page_size: int = 1000) -> Iterator[str]:
    """The names of the 'folders' right under prefix (which ends with '/')."""
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/", PaginationConfig={"PageSize": page_size})
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"][len(prefix):].rstrip("/")
    except Exception as exc:
        raise wrap(exc, f"cannot list s3://{bucket}/{prefix}") from exc


def delete_keys(client, bucket: str, keys: list[str]) -> None:
    """DeleteObjects, 1,000 keys a request; a key the server could not delete is an error."""
    for i in range(0, len(keys), 1000):
        try:
            answer = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        except Exception as exc:
            raise wrap(exc, f"deleting {len(keys)} object(s) from s3://{bucket}/ failed") from exc
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise S3Error(f"deleting s3://{bucket}/{first.get('Key')} failed: {first.get('Code')}: "
                          f"{first.get('Message')}")


# -- what the server honours ------------------------------------------------------------------

@dataclass(frozen=True)
class Capabilities:
    """What a server was seen to do (by `probe`), not what it claims."""

    conditional_create: bool  # PUT If-None-Match: * over an existing object is refused (412)
    conditional_replace: bool  # PUT If-Match: <stale ETag> is refused (412), the current ETag accepted
    verifies_sha256: bool  # a PUT whose x-amz-checksum-sha256 does not match its body is refused

    @property
    def conditional_writes(self) -> bool:
        return self.conditional_create and self.conditional_replace

    def describe(self) -> str:
        yes = lambda flag: "honoured" if flag else "NOT honoured"  # noqa: E731
        return (f"conditional writes (If-None-Match / If-Match) {yes(self.conditional_create)} / "
                f"{yes(self.conditional_replace)}; x-amz-checksum-sha256 {yes(self.verifies_sha256)}")


PROBE_PREFIX = ".cgan-probe/"  # scratch keys of the capability probe, deleted after use
_probed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # client -> {(endpoint, bucket): Capabilities}
_probe_lock = threading.Lock()


def probe(client, bucket: str, *, refresh: bool = False) -> Capabilities:
    """Find out, with a scratch object under .cgan-probe/ (deleted afterwards), whether the server
    honours If-None-Match, If-Match and x-amz-checksum-sha256; remembered per client and bucket."""
    import secrets


    cache_key = (endpoint(client), bucket)
    with _probe_lock:
        known = _probed.get(client, {}).get(cache_key)
        if known is not None and not refresh:
            return known
    key = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
    try:
        try:
            first = put_bytes(client, bucket, key, b"probe 1", if_none_match=True)
            create = _refused(lambda: put_bytes(client, bucket, key, b"probe 2", if_none_match=True))
        except S3Error as exc:
            if _unsupported(exc) is None:
                raise
            first, create = put_bytes(client, bucket, key, b"probe 1"), False
        current = (head(client, bucket, key) or {}).get("ETag") or first
        stale = '"' + "0" * 32 + '"'
        replace = _refused(lambda: put_bytes(client, bucket, key, b"probe 3", if_match=stale))
        if replace:  # and the current ETag must be accepted
            try:
                put_bytes(client, bucket, key, b"probe 4", if_match=current)
            except S3Error as exc:
                if not isinstance(exc, S3PreconditionFailed) and _unsupported(exc) is None:
                    raise
                replace = False
        sha = _refused(lambda: client.put_object(Bucket=bucket, Key=key, Body=b"probe 5",
                                                 ChecksumSHA256=checksum_sha256(b"something else")),
                       bad_digest=True)
    finally:
        try:
            delete_keys(client, bucket, [key])
        except S3Error:
            pass
    found = Capabilities(conditional_create=create, conditional_replace=replace, verifies_sha256=sha)
    with _probe_lock:
        _probed.setdefault(client, {})[cache_key] = found
    return found


def _unsupported(exc: BaseException) -> str | None:
    """The code of an answer that means 'this header/feature is not supported'."""
    code = error_code(exc) or (error_code(exc.__cause__) if exc.__cause__ is not None else "")
    if code in ("NotImplemented", "501", "InvalidArgument", "InvalidRequest"):
        return code
    return None


def _refused(write, *, bad_digest: bool = False) -> bool:
    """True when the write was refused as a precondition (or, with bad_digest, as a checksum
    mismatch); False when it went through or the server says it does not support the feature."""
    try:
        write()
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, S3Error) and exc.__cause__ is not None else exc
        code = error_code(cause)
        if bad_digest and (code in ("BadDigest", "XAmzContentChecksumMismatch", "InvalidDigest")
                           or (code in ("InvalidRequest", "InvalidArgument") and http_status(cause) == 400)):
            return True
        if not bad_digest and classify(cause) == PRECONDITION:
            return True
        if _unsupported(cause) is not None:
            return False
        raise wrap(cause, "probing what the object store supports failed") from exc
    return False
