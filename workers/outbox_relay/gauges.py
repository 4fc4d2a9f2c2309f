"""The gauges that need database queries (outbox backlog, queue and DLQ depth, saga executions
running, stuck and parked), refreshed by one process, the outbox relay, every few seconds.

A loop rather than a collector run at scrape time: the queries are async (asyncpg, on the
relay's own loop) and a scrape must not wait on the database. Each refresh has a timeout; a
failed one keeps the last values and counts checkout_db_gauges_errors_total.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform import metrics
from marketplace_platform.outbox import outbox_lag
from marketplace_platform.queues import Queues

log = logging.getLogger(__name__)

_EXECUTIONS = text(
    "SELECT count(*) FILTER (WHERE status = 'RUNNING') AS running,"
    " count(*) FILTER (WHERE status = 'RUNNING' AND state_entered_at"
    "   < clock_timestamp() - make_interval(secs => :bound)) AS stuck,"
    " count(*) FILTER (WHERE status = 'FAILED') AS parked"
    " FROM saga.executions"
)
_HAS_SAGA = text("SELECT to_regclass('saga.executions') IS NOT NULL")


async def refresh(
    engine: AsyncEngine,
    queues: Queues | None,
    *,
    schemas: Sequence[str] | None,
    stuck_after_seconds: float,
) -> None:
    """Query once and set every database-backed gauge."""
    for lag in await outbox_lag(engine, schemas):
        metrics.OUTBOX_UNPUBLISHED.labels(lag.schema).set(lag.unpublished)
        metrics.OUTBOX_OLDEST_AGE.labels(lag.schema).set(lag.oldest_age_seconds or 0.0)
    if queues is not None:
        for definition in queues.definitions():
            for name, dlq in ((definition.name, "false"), (definition.dead_letter_queue, "true")):
                stats = await queues.stats(name)
                metrics.QUEUE_DEPTH.labels(name, dlq).set(stats.visible + stats.in_flight)
                metrics.QUEUE_OLDEST_AGE.labels(name, dlq).set(stats.oldest_age_seconds or 0.0)
    async with engine.connect() as connection:
        if (await connection.execute(_HAS_SAGA)).scalar():
            row = (await connection.execute(_EXECUTIONS, {"bound": stuck_after_seconds})).one()
            metrics.EXECUTIONS_RUNNING.set(row.running)
            metrics.EXECUTIONS_STUCK.set(row.stuck)
            metrics.EXECUTIONS_PARKED.set(row.parked)


async def keep_fresh(
    engine: AsyncEngine,
    queues: Queues | None,
    *,
    schemas: Sequence[str] | None,
    interval_seconds: float,
    timeout_seconds: float,
    stuck_after_seconds: float,
) -> None:
    """Refresh the gauges every `interval_seconds` until cancelled."""
    while True:
        try:
            async with asyncio.timeout(timeout_seconds):
                await refresh(
                    engine, queues, schemas=schemas, stuck_after_seconds=stuck_after_seconds
                )
        except Exception as error:  # a refresh that fails must not stop the relay
            metrics.GAUGES_SCRAPE_ERRORS.inc()
            log.warning("database gauges not refreshed: %r", error)
        await asyncio.sleep(interval_seconds)
