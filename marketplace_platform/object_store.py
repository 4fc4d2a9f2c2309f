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
import asyncio
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

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


class LocalObjectStore(ObjectStore):
    """Documents as files under a root folder (the local world's S3)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def put_if_absent(self, key: str, body: bytes, *, content_type: str) -> PutResult:
        """Write a temporary file, then hard-link it to its name: the link fails if it exists."""
        path = self.root / check_key(key)
        created = await asyncio.to_thread(self._create, path, body)
        return PutResult(key=key, created=created, sha256=sha256_hex(body))

    async def get(self, key: str) -> bytes | None:
        """The file's bytes, or None."""
        path = self.root / check_key(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def keys(self, prefix: str = "") -> list[str]:
        """Every file under the root whose relative path starts with `prefix`."""
        return await asyncio.to_thread(self._keys, prefix)

    def _keys(self, prefix: str) -> list[str]:
        if not self.root.exists():
            return []
        found = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in found if k.startswith(prefix) and not _is_temporary(k))

    @staticmethod
    def _create(path: Path, body: bytes) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Readers never see a partial document: it is complete and synced before it has a name.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(body)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(temporary)


def _is_temporary(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith(".tmp-")


class S3ObjectStore(ObjectStore):
    """Documents in a versioned S3 bucket; a conditional put never adds a second version."""

    def __init__(
        self, client: Any, bucket: str, *, prefix: str = "", kms_key_id: str | None = None
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._kms_key_id = kms_key_id

    def _full_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def put_if_absent(self, key: str, body: bytes, *, content_type: str) -> PutResult:
        """PutObject with If-None-Match: *; S3's 412 (or 409 for a racing put) means it exists."""
        arguments: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._full_key(key),
            "Body": body,
            "ContentType": content_type,
            "IfNoneMatch": "*",
            "ChecksumAlgorithm": "SHA256",
            "Metadata": {"sha256": sha256_hex(body)},
        }
        if self._kms_key_id:
            arguments |= {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self._kms_key_id}
        try:
            response = await asyncio.to_thread(self._client.put_object, **arguments)
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = error.response.get("Error", {}).get("Code")
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return PutResult(key=key, created=False, sha256=sha256_hex(body))
            raise
        return PutResult(
            key=key, created=True, sha256=sha256_hex(body), version_id=response.get("VersionId")
        )

    async def get(self, key: str) -> bytes | None:
        """The object's bytes, or None."""
        try:
            response = await asyncio.to_thread(
                self._client.get_object, Bucket=self.bucket, Key=self._full_key(key)
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        body: bytes = await asyncio.to_thread(response["Body"].read)
        return body

    async def keys(self, prefix: str = "") -> list[str]:
        """Every key under the store's prefix that starts with `prefix`."""
        return await asyncio.to_thread(self._keys, prefix)

    def _keys(self, prefix: str) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        found: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
            found.extend(item["Key"][len(base) :] for item in page.get("Contents", []))
        return sorted(found)


def open_object_store(
    url: str, *, s3_client: Any = None, kms_key_id: str | None = None
) -> ObjectStore:
    """A store from `file:///path` (or a bare path) or `s3://bucket/prefix`."""
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
