"""What the analytics consumer wrote for facts whose handling has not committed: fact id ->
object key in `consumers.analytics_written`.

The objects live outside the database, so their write cannot join the inbox's transaction. A
row is committed in a transaction of its own before the object is written, and deleted in the
inbox's transaction, so it outlives exactly the attempts that wrote and did not commit (a
failed batch, a crash): a redelivery reads it and finds the fact already in an object.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from workers.consumers.tables import analytics_written


def engine_of(session: AsyncSession) -> AsyncEngine:
    """The engine of the inbox's session, for transactions of the record's own."""
    bind = session.bind
    if not isinstance(bind, AsyncEngine):
        raise TypeError("the analytics sink needs a session bound to an engine")
    return bind


async def earlier(engine: AsyncEngine, fact_ids: Collection[str]) -> dict[str, str]:
    """The object an attempt that did not commit wrote (or began to write) for each fact."""
    if not fact_ids:
        return {}
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(analytics_written.c.fact_id, analytics_written.c.object_key).where(
                analytics_written.c.fact_id.in_([uuid.UUID(f) for f in fact_ids])
            )
        )
        return {str(fact_id): key for fact_id, key in rows}


async def record(engine: AsyncEngine, keys: Mapping[str, str]) -> None:
    """Commit, before the objects are written, which object will hold each fact."""
    if not keys:
        return
    statement = insert(analytics_written).values(
        [{"fact_id": uuid.UUID(f), "object_key": key} for f, key in keys.items()]
    )
    async with engine.begin() as connection:
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=[analytics_written.c.fact_id],
                set_={"object_key": statement.excluded.object_key},
            )
        )


async def forget(session: AsyncSession, fact_ids: Collection[str]) -> None:
    """Delete the facts' rows in the inbox's transaction: they go when the handling commits."""
    if fact_ids:
        await session.execute(
            delete(analytics_written).where(
                analytics_written.c.fact_id.in_([uuid.UUID(f) for f in fact_ids])
            )
        )
