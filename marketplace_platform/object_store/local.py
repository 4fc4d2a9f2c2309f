"""The object store in a local folder: a document is created by a hard link, which fails if
the name exists."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from marketplace_platform.object_store import ObjectStore, PutResult, check_key, sha256_hex


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
