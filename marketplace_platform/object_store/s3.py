"""The object store on S3: a versioned bucket, optionally KMS-encrypted; a put carries
`If-None-Match: *`, so S3 refuses to add a second version."""

from __future__ import annotations

import asyncio
from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from marketplace_platform.object_store import ObjectStore, PutResult, check_key, sha256_hex


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
