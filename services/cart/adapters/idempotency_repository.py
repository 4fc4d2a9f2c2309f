"""Idempotency records: the first request under a key, its fingerprint and its response."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.cart.adapters.tables import idempotency_keys
from services.cart.domain.idempotency import KeyedRequest, StoredRequest

# Built once at import: each call binds its values.
_CLAIM = (
    insert(idempotency_keys)
    .values(
        scope=bindparam("scope"),
        key=bindparam("key"),
        operation=bindparam("operation"),
        fingerprint=bindparam("fingerprint"),
    )
    .on_conflict_do_nothing()
    .returning(idempotency_keys.c.key)
)
_STORED = select(idempotency_keys.c.fingerprint, idempotency_keys.c.response).where(
    idempotency_keys.c.scope == bindparam("scope"), idempotency_keys.c.key == bindparam("key")
)
_COMPLETE = (
    idempotency_keys.update()
    .where(
        idempotency_keys.c.scope == bindparam("scope_key"),
        idempotency_keys.c.key == bindparam("key_key"),
    )
    .values(response=bindparam("response"))
)


class IdempotencyRepository:
    """Idempotency keys of the cart schema, within the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(self, request: KeyedRequest) -> StoredRequest | None:
        """Claim the key for this request (None), or return what its first use stored.

        The insert comes first: a concurrent request under the same key waits on it until this
        transaction ends, then sees the stored response (or claims the key if this rolled back).
        """
        claimed = (
            await self.session.execute(
                _CLAIM,
                {
                    "scope": request.scope,
                    "key": request.key,
                    "operation": request.operation,
                    "fingerprint": request.fingerprint,
                },
            )
        ).one_or_none()
        if claimed is not None:
            return None
        row = (
            await self.session.execute(_STORED, {"scope": request.scope, "key": request.key})
        ).one()
        return StoredRequest(row.fingerprint, row.response or "")

    async def complete(self, request: KeyedRequest, response: str) -> None:
        """Store the response a replay of the claimed key returns."""
        await self.session.execute(
            _COMPLETE, {"scope_key": request.scope, "key_key": request.key, "response": response}
        )
