"""Key syntax of every store and bucket: safe relative keys, bucket names, joining key parts."""

from __future__ import annotations

import re

from cgan.errors import CganError

BUCKET_RE = re.compile(r"^(?!\d+\.\d+\.\d+\.\d+\Z)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
KEY_PART_RE = re.compile(r"^[A-Za-z0-9._=+@-]+\Z")


class StoreError(CganError):
    """A bad store URI, key or name, a missing artifact, or a store refused for its configuration."""

    retryable = False


def check_key(key: str) -> str:
    """A safe relative key: parts of [A-Za-z0-9._=+@-], no '.', '..', or empty parts."""
    if not isinstance(key, str) or not key or key.startswith("/") or "\\" in key:
        raise StoreError(f"artifact key {key!r} must be a non-empty relative path")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", "..") or not KEY_PART_RE.match(part):
            raise StoreError(
                f"artifact key {key!r} has an unsafe part {part!r}: use letters, digits and ._=+@- "
                "separated by single slashes, no '..'"
            )
    return key


def check_bucket(bucket: str) -> str:
    if not isinstance(bucket, str) or not BUCKET_RE.match(bucket) or ".." in bucket:
        raise StoreError(
            f"{bucket!r} is not a valid S3 bucket name: 3-63 lowercase letters, digits, '.' or "
            "'-', starting and ending with a letter or digit"
        )
    return bucket


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))
