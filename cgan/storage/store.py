"""The artifact store: where tasks hand artifacts to each other, named by a URI.

`file:///abs/path` on one machine, `s3://bucket/prefix` across machines. Keys are relative
POSIX paths under the store's root; `..`, absolute keys and empty parts are refused, so a key
can never escape the root. Writes are whole-object: a local write goes through a temp file
and a rename, an S3 PUT is atomic, so a reader never sees half an artifact under its name.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from cgan.storage import s3
from cgan.storage.keys import StoreError, check_bucket, check_key, join


@dataclass
class LocalStore:
    root: Path

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self.path(prefix))

    def put_file(self, local: str | os.PathLike, key: str) -> str:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)
        return key

    def put_bytes(self, data: bytes, key: str) -> str:
        from cgan.storage.files import atomic_write_bytes

        atomic_write_bytes(self.path(key), data)
        return key

    def get_file(self, key: str, local: str | os.PathLike) -> Path:
        source = self.path(key)
        if not source.is_file():
            raise StoreError(f"artifact {key!r} not found in {self.uri}")
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.part")
        shutil.copyfile(source, tmp)
        os.replace(tmp, local)
        return local

    def get_bytes(self, key: str) -> bytes:
        source = self.path(key)
        if not source.is_file():
            raise StoreError(f"artifact {key!r} not found in {self.uri}")
        return source.read_bytes()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes of an artifact from `offset` (StoreError when it is shorter)."""
        source = self.path(key)
        if not source.is_file():
            raise StoreError(f"artifact {key!r} not found in {self.uri}")
        with open(source, "rb") as fh:
            fh.seek(offset)
            data = fh.read(length)
        return _whole_range(data, key, offset, length, self.uri)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self.path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for p in base.rglob("*"):
            if p.is_file() and not p.name.startswith("."):
                keys.append(p.relative_to(self.root).as_posix())
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def usage(self, prefix: str = "") -> tuple[int, int]:
        """(objects, bytes) stored under prefix."""
        files = [self.root / k for k in self.list(prefix)]
        return len(files), sum(f.stat().st_size for f in files)

    def folder_ages(self, prefix: str) -> dict[str, float]:
        """{folder name: newest modification time (epoch s) of anything in it} of prefix's folders."""
        base = self.path(prefix)
        ages = {}
        for folder in (base.iterdir() if base.is_dir() else ()):
            if folder.is_dir():
                times = [p.stat().st_mtime for p in folder.rglob("*")] or [folder.stat().st_mtime]
                ages[folder.name] = max(times)
        return ages


@dataclass
class S3Store:
    """A store under s3://bucket/prefix; every request goes through the adapter cgan.storage.s3.

    A missing artifact or a configuration error (credentials, rights, no bucket) raises
    StoreError (a retry cannot help); a store that is down or failing raises cgan.storage.s3.S3Error,
    which keeps the task's retries.
    """

    bucket: str
    prefix: str
    client: Any  # a boto3 S3 client (boto3 ships no type hints)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def describe(self) -> str:
        """The store for messages: its URI and endpoint, never a credential."""

        return f"{self.uri} at {s3.endpoint(self.client)}"

    def key(self, key: str) -> str:
        return join(self.prefix, check_key(key))

    def child(self, prefix: str) -> S3Store:
        return S3Store(self.bucket, join(self.prefix, check_key(prefix)), self.client)

    def put_file(self, local: str | os.PathLike, key: str) -> str:

        with self._errors(key):
            s3.upload_file(self.client, self.bucket, self.key(key), local)  # multipart when large
        return key

    def put_bytes(self, data: bytes, key: str) -> str:

        with self._errors(key):
            s3.put_bytes(self.client, self.bucket, self.key(key), data)
        return key

    def get_file(self, key: str, local: str | os.PathLike) -> Path:

        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.part")
        try:
            with self._errors(key):
                s3.download_file(self.client, self.bucket, self.key(key), tmp)
        except Exception:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, local)
        return local

    def get_bytes(self, key: str) -> bytes:

        with self._errors(key):
            return s3.get_bytes(self.client, self.bucket, self.key(key))[0]

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes of an artifact from `offset`: one ranged GET."""

        with self._errors(key):
            data = s3.get_range(self.client, self.bucket, self.key(key), offset, length)
        return _whole_range(data, key, offset, length, self.uri)

    def exists(self, key: str) -> bool:

        with self._errors(key):
            return s3.head(self.client, self.bucket, self.key(key)) is not None

    def list(self, prefix: str = "") -> list[str]:

        full = join(self.prefix, check_key(prefix)) if prefix else self.prefix
        with self._errors(prefix):
            keys = s3.list_keys(self.client, self.bucket, f"{full}/" if full else "")
        return sorted(k[len(self.prefix) + 1:] if self.prefix else k for k in keys)

    def delete_prefix(self, prefix: str) -> None:

        keys = [self.key(k) for k in self.list(prefix)]
        with self._errors(prefix):
            s3.delete_keys(self.client, self.bucket, keys)

    @contextmanager
    def _errors(self, key: str):
        """Missing and configuration failures become StoreError; the rest stay retryable."""

        try:
            yield
        except s3.S3Missing:
            raise StoreError(f"artifact {key!r} not found in {self.describe()}") from None
        except s3.S3ConfigError as exc:
            raise StoreError(f"{exc} [artifact store {self.describe()}]") from exc

    def _objects(self, prefix: str):
        full = join(self.prefix, check_key(prefix)) if prefix else self.prefix
        full = f"{full}/" if full else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                yield obj["Key"][len(full):], obj

    def usage(self, prefix: str = "") -> tuple[int, int]:
        """(objects, bytes) stored under prefix."""
        sizes = [obj["Size"] for _, obj in self._objects(prefix)]
        return len(sizes), sum(sizes)

    def folder_ages(self, prefix: str) -> dict[str, float]:
        """{folder name: newest LastModified (epoch s) of its objects} of prefix's folders."""
        ages: dict[str, float] = {}
        for rest, obj in self._objects(prefix):
            if "/" in rest:
                name = rest.split("/", 1)[0]
                ages[name] = max(ages.get(name, 0.0), obj["LastModified"].timestamp())
        return ages


ArtifactStore = LocalStore | S3Store


def open_store(uri: str, *, s3_client=None) -> ArtifactStore:
    """`file:///abs/dir` (or a plain absolute path) -> LocalStore; `s3://bucket/prefix` -> S3Store.

    For s3:// pass a boto3 S3 client (operators take it from the Airflow connection); without
    one, boto3's own configuration is used (AWS_* environment, CGAN_S3_ENDPOINT_URL).
    """
    if not isinstance(uri, str) or not uri:
        raise StoreError("the artifact store URI is empty: use file:///abs/dir or s3://bucket/prefix")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        raw = unquote(parsed.path if parsed.scheme else uri)
        if parsed.netloc not in ("", "localhost") or not os.path.isabs(raw):
            raise StoreError(f"{uri!r}: a local store needs an absolute path, e.g. file:///var/cgan")
        if ".." in PurePosixPath(raw).parts:
            raise StoreError(f"{uri!r}: '..' is not allowed in a store path")
        return LocalStore(Path(raw))
    if parsed.scheme == "s3":
        bucket = check_bucket(parsed.netloc)
        prefix = parsed.path.strip("/")
        if prefix:
            check_key(prefix)
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3", endpoint_url=os.environ.get("CGAN_S3_ENDPOINT_URL") or None)
        return S3Store(bucket, prefix, s3_client)
    raise StoreError(f"{uri!r}: unsupported scheme {parsed.scheme!r}; use file:// or s3://")


_NO_CLIENT = object()


def check_store_uri(uri: str) -> str:
    """The checks of open_store (scheme, absolute path, no '..', S3 bucket and prefix names)
    without opening anything; returns uri."""
    open_store(uri, s3_client=_NO_CLIENT)
    return uri


def _whole_range(data: bytes, key: str, offset: int, length: int, where: str) -> bytes:
    if len(data) != length:
        raise StoreError(f"artifact {key!r} in {where} is too short: {len(data)} of the {length} bytes "
                         f"at offset {offset} read (a partial write?)")
    return data


# Requests one upload_dir / download_keys keeps in flight on an S3 store (a folder's files are
# many small objects: one input bin per grid): each waits on the server, not on this process's CPU.
S3_TRANSFER_THREADS = 8


def _each(store: ArtifactStore, fn, items: list) -> list:
    """fn over items in order; on an S3 store S3_TRANSFER_THREADS at a time (the first error is
    raised once the requests in flight have ended)."""
    if not isinstance(store, S3Store) or len(items) < 2:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=S3_TRANSFER_THREADS, thread_name_prefix="s3-transfer")
    try:
        return list(pool.map(fn, items))
    finally:  # after an error: nothing more is started, what is in flight ends
        pool.shutdown(wait=True, cancel_futures=True)


def upload_dir(store: ArtifactStore, local_dir: str | os.PathLike, prefix: str, pattern: str = "*") -> list[str]:
    """Upload the files of a folder (not recursive) under prefix; returns the keys."""
    paths = [p for p in sorted(Path(local_dir).glob(pattern)) if p.is_file() and not p.name.startswith(".")]
    return _each(store, lambda path: store.put_file(path, join(prefix, path.name)), paths)


def download_keys(store: ArtifactStore, keys: Iterable[str], local_dir: str | os.PathLike) -> list[Path]:
    """Fetch keys into local_dir, flat, by their base names."""
    local_dir = Path(local_dir)
    return _each(store, lambda k: store.get_file(k, local_dir / PurePosixPath(k).name), list(keys))
