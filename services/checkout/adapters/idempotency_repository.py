"""PlaceOrder's idempotency records in PostgreSQL, keyed by (customer, key)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Interval, Row, bindparam, delete, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.checkout.adapters.tables import idempotency_keys
from services.checkout.domain.idempotency import IdempotencyRecord, PlacedOrder, RecordState
from services.checkout.service_layer.ports import IdempotencyRepositoryPort

# The completed record, inserted again (with a lease, as a claim has) when it was reaped.
_COMPLETE_CLAIM = text(
    """
    INSERT INTO checkout.idempotency_keys AS k (customer_id, key, fingerprint, state,
                                                locked_until, response)
    VALUES (:customer_id, :key, :fingerprint, :state, now() + CAST(:lease AS interval),
            :response)
    ON CONFLICT (customer_id, key) DO UPDATE
        SET state = excluded.state, response = excluded.response
    """
).bindparams(bindparam("response", type_=JSONB))


_CLAIM = (
    pg_insert(idempotency_keys)
    .values(
        customer_id=bindparam("customer_id"),
        key=bindparam("key"),
        fingerprint=bindparam("fingerprint"),
        state=RecordState.STARTED.value,
        locked_until=func.now() + bindparam("lease", type_=Interval),
    )
    .on_conflict_do_nothing()
    .returning(idempotency_keys.c.key)
)
_GET_FOR_UPDATE = (
    select(idempotency_keys)
    .where(
        idempotency_keys.c.customer_id == bindparam("customer_id"),
        idempotency_keys.c.key == bindparam("key"),
    )
    .with_for_update()
)


class IdempotencyRepository(IdempotencyRepositoryPort):
    """Claims, reads, completes and reaps idempotency records."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def now(self) -> datetime:
        """The database's clock, the one every lease is measured by."""
        return (await self.session.execute(select(func.now()))).scalar_one()

    async def claim(
        self, *, customer_id: str, key: str, fingerprint: str, lease: timedelta
    ) -> bool:
        """Insert a STARTED record holding a lease; False when the key already has one."""
        inserted = await self.session.execute(
            _CLAIM,
            {"customer_id": customer_id, "key": key, "fingerprint": fingerprint, "lease": lease},
        )
        return inserted.one_or_none() is not None

    async def get(self, customer_id: str, key: str) -> IdempotencyRecord | None:
        """The record, row-locked until the transaction ends."""
        row = (
            await self.session.execute(_GET_FOR_UPDATE, {"customer_id": customer_id, "key": key})
        ).one_or_none()
        return None if row is None else _record(row)

    async def extend_lease(self, customer_id: str, key: str, lease: timedelta) -> None:
        """Take over (or keep) a STARTED record for another lease."""
        await self._set(customer_id, key, locked_until=func.now() + lease)

    async def release_lease(self, customer_id: str, key: str) -> None:
        """Let the next request with this key proceed at once (the request did not complete)."""
        await self.session.execute(
            update(idempotency_keys)
            .where(
                idempotency_keys.c.customer_id == customer_id,
                idempotency_keys.c.key == key,
                idempotency_keys.c.state == RecordState.STARTED.value,
            )
            .values(locked_until=func.now())
        )

    async def complete(self, customer_id: str, key: str, response: PlacedOrder) -> None:
        """Store the response; from now on the key replays it."""
        await self._set(
            customer_id,
            key,
            state=RecordState.COMPLETED.value,
            response=_response(response),
        )

    async def complete_claim(
        self,
        *,
        customer_id: str,
        key: str,
        fingerprint: str,
        lease: timedelta,
        response: PlacedOrder,
    ) -> None:
        """Store the response of the request that claimed the key, claiming it again if it was
        reaped since: one upsert."""
        await self.session.execute(
            _COMPLETE_CLAIM,
            {
                "customer_id": customer_id,
                "key": key,
                "fingerprint": fingerprint,
                "state": RecordState.COMPLETED.value,
                "lease": lease,
                "response": _response(response),
            },
        )

    async def reap(self, *, older_than: timedelta, limit: int) -> int:
        """Delete up to `limit` records created before now - older_than; how many."""
        oldest = (
            select(idempotency_keys.c.customer_id, idempotency_keys.c.key)
            .where(idempotency_keys.c.created_at < func.now() - older_than)
            .order_by(idempotency_keys.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        deleted = await self.session.execute(
            delete(idempotency_keys)
            .where(
                tuple_(idempotency_keys.c.customer_id, idempotency_keys.c.key).in_(
                    select(oldest.subquery())
                )
            )
            .returning(idempotency_keys.c.key)
        )
        return len(deleted.all())

    async def _set(self, customer_id: str, key: str, **values: Any) -> None:
        await self.session.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.customer_id == customer_id, idempotency_keys.c.key == key)
            .values(**values)
        )


def _response(placed: PlacedOrder) -> dict[str, str]:
    return {"order_id": str(placed.order_id), "status": placed.status}


def _record(row: Row[Any]) -> IdempotencyRecord:
    response = (
        PlacedOrder(order_id=uuid.UUID(row.response["order_id"]), status=row.response["status"])
        if row.response
        else None
    )
    return IdempotencyRecord(
        customer_id=row.customer_id,
        key=row.key,
        fingerprint=row.fingerprint,
        state=RecordState(row.state),
        locked_until=row.locked_until,
        response=response,
    )
