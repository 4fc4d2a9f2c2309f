"""Idempotency keys: a key is scoped to its customer and bound to one request's fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from marketplace_platform.errors import IdempotencyKeyReused


@dataclass(frozen=True, kw_only=True)
class KeyedRequest:
    """A mutating request as its idempotency key sees it."""

    scope: str  # the customer id, or "admin" for catalog changes
    key: str
    operation: str
    fields: dict[str, str | int | bool]

    @property
    def fingerprint(self) -> str:
        """What identifies the request, whatever the key (same operation and fields)."""
        canonical = json.dumps([self.operation, self.fields], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredRequest:
    """What an earlier request under the same key left."""

    fingerprint: str
    response: str


def check_replay(request: KeyedRequest, stored_fingerprint: str) -> None:
    """Refuse a key used before for a different request."""
    if stored_fingerprint != request.fingerprint:
        raise IdempotencyKeyReused(
            f"idempotency key {request.key!r} was used for a different request",
            metadata={"idempotency_key": request.key},
        )
