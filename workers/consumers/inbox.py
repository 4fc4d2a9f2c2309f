"""The inbox: which events each consumer has handled, by (consumer, event_id)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select, text
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


# In event id order: two batches sharing events wait for each other, they never deadlock.
_CLAIM_BATCH = text(
    """
    INSERT INTO consumers.inbox (consumer, event_id, event_type)
    SELECT :consumer, event_id, event_type
    FROM unnest(CAST(:event_ids AS uuid[]), CAST(:event_types AS text[]))
        WITH ORDINALITY AS claimed(event_id, event_type, position)
    ORDER BY position
    ON CONFLICT DO NOTHING
    RETURNING event_id
    """
)


async def claim_batch(
    session: AsyncSession, *, consumer: str, events: Iterable[tuple[uuid.UUID, str]]
) -> set[uuid.UUID]:
    """Insert the inbox rows of several (event_id, event_type) in one statement, in the
    session's transaction; returns the ids claimed now (the others were handled).

    As with `claim`, a row another transaction inserted first makes this wait for its outcome.
    """
    by_id = dict(events)
    if not by_id:
        return set()
    event_ids = sorted(by_id)
    result = await session.execute(
        _CLAIM_BATCH,
        {
            "consumer": consumer,
            "event_ids": event_ids,
            "event_types": [by_id[event_id] for event_id in event_ids],
        },
    )
    return {uuid.UUID(str(event_id)) for event_id in result.scalars()}


async def handled(session: AsyncSession, *, consumer: str, event_id: uuid.UUID) -> bool:
    """Whether `consumer` has committed the handling of `event_id`."""
    found = await session.execute(
        select(inbox.c.event_id).where(inbox.c.consumer == consumer, inbox.c.event_id == event_id)
    )
    return found.first() is not None
