"""The inbox: which events each consumer has handled, by (consumer, event_id)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from workers.consumers.tables import inbox


async def claim(
    session: AsyncSession, *, consumer: str, event_id: uuid.UUID, event_type: str
) -> bool:
    """Insert the inbox row in the session's transaction; False if the event was handled.

    A concurrent transaction that inserted the same row first makes this wait for its outcome:
    committed means handled (False), rolled back means it is ours to handle (True).
    """
    result = await session.execute(
        insert(inbox)
        .values(consumer=consumer, event_id=event_id, event_type=event_type)
        .on_conflict_do_nothing()
        .returning(inbox.c.event_id)
    )
    return result.first() is not None


async def handled(session: AsyncSession, *, consumer: str, event_id: uuid.UUID) -> bool:
    """Whether `consumer` has committed the handling of `event_id`."""
    found = await session.execute(
        select(inbox.c.event_id).where(inbox.c.consumer == consumer, inbox.c.event_id == event_id)
    )
    return found.first() is not None
