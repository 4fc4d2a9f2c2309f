"""Publish outbox rows to the event bus: at least once, in order per aggregate, in batches.

How several relays share the work without reordering an aggregate's events:

1. Claim heads: `FOR UPDATE SKIP LOCKED` on the oldest unpublished row of each aggregate (the
   "head"), oldest first. Holding an aggregate's head makes this relay its only publisher until
   commit: no other relay sees a later row of it as a head while the head is unpublished.
2. Fetch, locked, the claimed aggregates' unpublished rows in id order (up to the batch size).
3. Publish in waves: the first row of every claimed aggregate, then the second, and so on, so
   a row is only handed to the bus after the aggregate's earlier rows were accepted. An
   aggregate whose row is refused stops there for this batch.
4. Mark the accepted rows published and commit.

A relay killed between 3 and 4 leaves its rows unpublished; the next relay publishes them again
(a duplicate, never a loss). Consumers deduplicate by event_id.

When to look: a relay given `announcements` (the outbox rows' NOTIFY, whose payload names the
schema, see `marketplace_platform.outbox`) waits for one when a pass published nothing, then
reads only the schemas announced; after a pass it reads again at once the schemas that published
rows and those announced meanwhile. It reads every schema at each poll interval (a NOTIFY is
skipped while a relay is busy, and lost while the LISTEN is down) and after a lost LISTEN.
Without announcements every pass reads every schema. The schemas that have an outbox are
discovered again at each lag log, not on every pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from opentelemetry import propagate, trace
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from marketplace.events.v1 import envelope_pb2
from marketplace_platform.event_bus import EventBus, trace_carrier
from marketplace_platform.notifications import KeyedWakeups
from marketplace_platform.outbox import checked_schema, outbox_lag, outbox_schemas

log = logging.getLogger(__name__)


class OutboxAnnouncements(KeyedWakeups):
    """The schemas whose outbox was announced (by a NOTIFY naming it) since the relay last
    took them; a lost LISTEN announces every schema. Fed by `notifications.Listener`."""

    def __init__(self) -> None:
        super().__init__()
        self._schemas: set[str] = set()
        self._every = False
        self._announced = asyncio.Event()

    def wake(self, key: str) -> None:
        """`key`'s outbox has new rows."""
        super().wake(key)
        self._schemas.add(key)
        self._announced.set()

    def wake_all(self) -> None:
        """Any outbox may have new rows (notifications may have been lost)."""
        super().wake_all()
        self._every = True
        self._announced.set()

    def take(self) -> set[str] | None:
        """The schemas announced since the last take (None: every schema), forgotten now."""
        schemas, every = self._schemas, self._every
        self._schemas, self._every = set(), False
        self._announced.clear()
        return None if every else schemas

    async def wait(self, within: float) -> bool:
        """Wait for an announcement (one already there returns at once), or `within` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._announced.wait()
        return self._announced.is_set()


@dataclass(frozen=True)
class _Row:
    id: int
    aggregate: tuple[str, str]
    envelope: envelope_pb2.EventEnvelope


class OutboxRelay:
    """Moves outbox rows of the given schemas (or all outbox schemas) to the bus."""

    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        *,
        schemas: Sequence[str] | None = None,
        batch_size: int = 200,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._schemas = [checked_schema(schema) for schema in schemas] if schemas else None
        self._batch_size = batch_size
        self._discovered: list[str] | None = None

    async def schemas(self) -> list[str]:
        """The schemas this relay reads (discovered once, until `rediscover`)."""
        if self._schemas is not None:
            return list(self._schemas)
        if self._discovered is None:
            self._discovered = await outbox_schemas(self._engine)
        return list(self._discovered)

    def rediscover(self) -> None:
        """Look for outbox schemas again on the next pass (a migration may have added one)."""
        self._discovered = None

    async def relay_once(self) -> int:
        """One batch from every schema; returns how many rows were published."""
        published = 0
        for schema in await self.schemas():
            published += await self.relay_schema(schema)
        return published

    async def _relay_pass(self, due: set[str] | None) -> tuple[set[str], bool]:
        """One batch from each schema `due` (None: every one): the schemas that published, and
        whether one of them filled its batch (more rows wait)."""
        schemas = await self.schemas()
        if due is not None and self._schemas is None and not due <= set(schemas):
            self.rediscover()  # an outbox announced that we have not discovered yet
            schemas = await self.schemas()
        busy: set[str] = set()
        full = False
        for schema in schemas:
            if due is not None and schema not in due:
                continue
            published = await self.relay_schema(schema)
            if published:
                busy.add(schema)
            full = full or published >= self._batch_size
        return busy, full

    async def relay_schema(self, schema: str) -> int:
        """One batch from one schema's outbox, in one transaction; returns rows published."""
        outbox = f'"{checked_schema(schema)}".outbox'
        async with self._engine.connect() as connection, connection.begin():
            rows = await self._claim(connection, outbox)
            if not rows:
                return 0
            published_ids = await self._publish_in_waves(rows)
            if published_ids:
                await connection.execute(
                    text(
                        f"UPDATE {outbox} SET published_at = clock_timestamp() WHERE id = ANY(:ids)"
                    ),
                    {"ids": published_ids},
                )
        return len(published_ids)

    async def _claim(self, connection: AsyncConnection, outbox: str) -> list[_Row]:
        heads = (
            await connection.execute(
                text(
                    f"SELECT o.aggregate_type, o.aggregate_id FROM {outbox} AS o"
                    " WHERE o.published_at IS NULL AND NOT EXISTS ("
                    f"  SELECT 1 FROM {outbox} AS earlier"
                    "   WHERE earlier.published_at IS NULL"
                    "   AND earlier.aggregate_type = o.aggregate_type"
                    "   AND earlier.aggregate_id = o.aggregate_id AND earlier.id < o.id)"
                    " ORDER BY o.id LIMIT :limit FOR UPDATE SKIP LOCKED"
                ),
                {"limit": self._batch_size},
            )
        ).all()
        if not heads:
            return []
        rows = (
            await connection.execute(
                text(
                    f"SELECT id, aggregate_type, aggregate_id, envelope FROM {outbox}"
                    " WHERE published_at IS NULL AND (aggregate_type, aggregate_id) IN ("
                    "  SELECT * FROM unnest(CAST(:types AS text[]), CAST(:ids AS text[])))"
                    " ORDER BY id LIMIT :limit FOR UPDATE"
                ),
                {
                    "types": [head.aggregate_type for head in heads],
                    "ids": [head.aggregate_id for head in heads],
                    "limit": max(self._batch_size, len(heads)),
                },
            )
        ).all()
        return [
            _Row(
                row.id,
                (row.aggregate_type, row.aggregate_id),
                envelope_pb2.EventEnvelope.FromString(row.envelope),
            )
            for row in rows
        ]

    async def _publish_in_waves(self, rows: list[_Row]) -> list[int]:
        queues: dict[tuple[str, str], list[_Row]] = {}
        for row in rows:
            queues.setdefault(row.aggregate, []).append(row)
        published: list[int] = []
        depth = 0
        while True:
            wave = sorted(
                (pending[depth] for pending in queues.values() if depth < len(pending)),
                key=lambda row: row.id,
            )
            if not wave:
                return published
            with _publish_spans(wave):
                result = await self._bus.publish([row.envelope for row in wave])
            accepted = set(result.published)
            for row in wave:
                if row.envelope.event_id in accepted:
                    published.append(row.id)
                else:
                    # Later rows of this aggregate wait for this one: drop them from the batch.
                    log.warning(
                        "bus refused %s %s: %s",
                        row.envelope.event_type,
                        row.envelope.event_id,
                        result.failed.get(row.envelope.event_id, "not acknowledged"),
                    )
                    del queues[row.aggregate][depth:]
            depth += 1

    async def run(
        self,
        stopping: asyncio.Event,
        *,
        poll_interval_seconds: float = 1.0,
        lag_log_interval_seconds: float = 15.0,
        announcements: OutboxAnnouncements | None = None,
        batch_window_seconds: float = 0.05,
    ) -> None:
        """Relay until `stopping` is set: the batch in hand finishes, then it returns. After a
        pass that published nothing it waits for `announcements` (if any) or the poll interval;
        after one that published it waits `batch_window_seconds` before the next (rows that
        keep coming are taken in batches, not one pass each)."""
        next_lag_log = time.monotonic()
        due: set[str] | None = None
        while not stopping.is_set():
            try:
                busy, full = await self._relay_pass(due)
            except Exception:
                log.exception("relay pass failed; retrying")
                busy, full = set(), False
            if time.monotonic() >= next_lag_log:
                self.rediscover()
                await self._log_lag()
                next_lag_log = time.monotonic() + lag_log_interval_seconds
            if announcements is None:
                due = None
                if not busy:
                    await _idle(stopping, poll_interval_seconds, None)
                continue
            if busy and not full:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), batch_window_seconds)
            announced = announcements.take()
            if busy or announced is None or announced:
                due = None if announced is None else busy | announced
                continue
            woken = await _idle(stopping, poll_interval_seconds, announcements)
            due = announcements.take() if woken else None

    async def _log_lag(self) -> None:
        try:
            lags = await outbox_lag(self._engine, await self.schemas())
        except Exception:
            log.exception("could not measure the outbox lag")
            return
        for lag in lags:
            log.info(
                "outbox lag %s: %d unpublished, oldest %.1fs",
                lag.schema,
                lag.unpublished,
                lag.oldest_age_seconds or 0.0,
                extra={
                    "outbox_schema": lag.schema,
                    "outbox_unpublished": lag.unpublished,
                    "outbox_lag_seconds": lag.oldest_age_seconds or 0.0,
                },
            )


async def _idle(
    stopping: asyncio.Event, seconds: float, announcements: OutboxAnnouncements | None
) -> bool:
    """Wait until announced, stopped, or `seconds` pass; whether there was an announcement."""
    if announcements is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)
        return False
    announced = asyncio.ensure_future(announcements.wait(seconds))
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({announced, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (announced, stopped):
            waiter.cancel()
    return announced.done() and not announced.cancelled() and announced.result()


_tracer = trace.get_tracer(__name__)


@contextlib.contextmanager
def _publish_spans(wave: list[_Row]) -> Iterator[None]:
    """A producer span per row while its wave is published, each in the trace its envelope
    carries (the call that wrote the outbox row), so the relay's hop shows in that trace."""
    with contextlib.ExitStack() as spans:
        for row in wave:
            spans.enter_context(
                _tracer.start_as_current_span(
                    f"outbox.publish {row.envelope.event_type}",
                    context=propagate.extract(trace_carrier(row.envelope)),
                    kind=trace.SpanKind.PRODUCER,
                    attributes={
                        "messaging.message.id": row.envelope.event_id,
                        "outbox.row_id": row.id,
                    },
                )
            )
        yield
