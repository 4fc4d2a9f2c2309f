"""The object store port: write-once documents (invoices, analytics facts) by key.

A document is written once and never replaced: `put_if_absent` stores it unless its key is
taken, and answers whether it did. Writers use deterministic keys (an order id, an event id),
so a redelivered event finds its document already there instead of writing a second one.

Adapters: `LocalObjectStore` (a folder; a file is created by a hard link, which fails if the
name exists) and `S3ObjectStore` (a versioned bucket, optionally KMS-encrypted; a put carries
`If-None-Match: *`, so S3 refuses to add a second version). `open_object_store(url)` picks one
from `file:///path` or `s3://bucket/prefix`.
"""

from __future__ import annotations

import abc
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# Keys are relative paths of plain segments: nothing may climb out of a local root.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,199}$")


@dataclass(frozen=True)
class PutResult:
    """What `put_if_absent` did: `created` is False when the key already held a document."""

    key: str
    created: bool
    sha256: str
    version_id: str | None = None


class ObjectStore(abc.ABC):
    """Write-once documents by key."""

    @abc.abstractmethod
    async def put_if_absent(self, key: str, body: bytes, *, content_type: str) -> PutResult:
        """Store `body` under `key` unless the key is taken; never replaces a document."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The document under `key`, or None."""

    @abc.abstractmethod
    async def keys(self, prefix: str = "") -> list[str]:
        """Every key starting with `prefix`, sorted."""


def check_key(key: str) -> str:
    """Refuse a key that is not a relative path of plain segments."""
    parts = key.split("/")
    if not key or not all(_SEGMENT.match(part) for part in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


def sha256_hex(body: bytes) -> str:
    """The hex SHA-256 of a document, recorded with every put."""
    return hashlib.sha256(body).hexdigest()


def open_object_store(
    url: str, *, s3_client: Any = None, kms_key_id: str | None = None
) -> ObjectStore:
    """A store from `file:///path` (or a bare path) or `s3://bucket/prefix`."""
    from marketplace_platform.object_store.local import LocalObjectStore
    from marketplace_platform.object_store.s3 import S3ObjectStore

    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if s3_client is None:
            import boto3  # type: ignore[import-untyped]

            s3_client = boto3.client("s3")
        return S3ObjectStore(
            s3_client, parsed.netloc, prefix=parsed.path.lstrip("/"), kms_key_id=kms_key_id
        )
    if parsed.scheme in ("", "file"):
        return LocalObjectStore(Path(parsed.path if parsed.scheme else url))
    raise ValueError(f"unsupported object store URL {url!r}")
