"""The outbox relay against real PostgreSQL, with outbox rows written by inventory's unit of work:
every row delivered in order per aggregate and marked published; racing relays deliver each row
once; a relay process SIGKILLed mid-batch loses nothing; lag; SIGTERM stops the process cleanly;
a transaction that writes outbox rows queues one NOTIFY for the relays, however many rows, and
an idle relay process that would poll hourly publishes new rows at once, also after its LISTEN
connection was terminated."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.common.v1 import ids_pb2
from marketplace.events.v1 import envelope_pb2, inventory_events_pb2
from marketplace_platform.db import unit_of_work_factory
from marketplace_platform.event_bus import decode_message_body
from marketplace_platform.event_bus.local import LocalEventBus
from marketplace_platform.event_bus.rules import Routing, load_routing
from marketplace_platform.outbox import OUTBOX_CHANNEL, RELAY_BUSY_SECONDS, OutboxWriter, outbox_lag
from marketplace_platform.queues.postgres import PostgresQueues
from services.inventory.adapters import tables as inventory_tables
from tests.support.polling import eventually, until_equal
from tests.support.processes import PythonProcesses
from workers.outbox_relay.relay import OutboxRelay

SCHEMA = "inventory"
WITHIN = 60.0


# A relay publishes every unpublished row of the schema: on a database of this module's own,
# no other module's rows are in its batches.
pytestmark = [pytest.mark.engine(db_pool_size=20), pytest.mark.own_database]


@pytest.fixture
def prefix() -> str:
    return f"r{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def routing(prefix: str) -> Routing:
    return load_routing().prefixed(prefix)


@pytest.fixture
def queues(engine: AsyncEngine, routing: Routing) -> PostgresQueues:
    return PostgresQueues(engine, routing.queues)


def relay_on(engine: AsyncEngine, routing: Routing, queues: PostgresQueues) -> OutboxRelay:
    return OutboxRelay(engine, LocalEventBus(routing, queues), schemas=[SCHEMA], batch_size=50)


async def write_events(
    engine: AsyncEngine,
    aggregates: int,
    per_aggregate: int,
    *,
    busy_seconds: float = RELAY_BUSY_SECONDS,
) -> dict[str, list[str]]:
    """Outbox rows through inventory's unit of work, interleaved across aggregates, one
    transaction per round; returns each aggregate's event ids in writing order."""
    writer = OutboxWriter(inventory_tables.outbox, producer="inventory", busy_seconds=busy_seconds)
    unit_of_work = unit_of_work_factory(engine, writer)
    order_ids = [str(uuid.uuid4()) for _ in range(aggregates)]
    written: dict[str, list[str]] = {order_id: [] for order_id in order_ids}
    for _ in range(per_aggregate):
        async with unit_of_work() as uow:
            for order_id in order_ids:
                event = inventory_events_pb2.InventoryReserved(
                    reservation_id=ids_pb2.ReservationId(value=str(uuid.uuid4())),
                    order_id=ids_pb2.OrderId(value=order_id),
                )
                envelope = await uow.publish(event, aggregate_type="order", aggregate_id=order_id)
                written[order_id].append(envelope.event_id)
    return written


async def deliveries(
    queues: PostgresQueues, queue: str, written: dict[str, list[str]]
) -> list[envelope_pb2.EventEnvelope]:
    """The envelopes of these aggregates on the queue, in the order the bus delivered them."""
    messages = await queues.peek(queue, max_messages=1_000_000)
    envelopes = [decode_message_body(message.body) for message in messages]
    return [envelope for envelope in envelopes if envelope.aggregate_id in written]


def assert_in_order_per_aggregate(
    written: dict[str, list[str]], delivered: list[envelope_pb2.EventEnvelope]
) -> None:
    """Every written event delivered, and no event delivered before its aggregate's earlier
    events had been (duplicates allowed: first deliveries are in writing order)."""
    first_seen: dict[str, list[str]] = defaultdict(list)
    for envelope in delivered:
        if (
            envelope.aggregate_id in written
            and envelope.event_id not in first_seen[envelope.aggregate_id]
        ):
            first_seen[envelope.aggregate_id].append(envelope.event_id)
    assert dict(first_seen) == written


async def published_count(engine: AsyncEngine, event_ids: list[str]) -> int:
    outbox = inventory_tables.outbox
    async with engine.connect() as connection:
        count = await connection.scalar(
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.event_id.in_(event_ids), outbox.c.published_at.is_not(None))
        )
    return int(count or 0)


async def drain(relay: OutboxRelay) -> None:
    deadline = time.monotonic() + WITHIN
    while await relay.relay_once():
        assert time.monotonic() < deadline


async def mark_all_published(engine: AsyncEngine) -> None:
    outbox = inventory_tables.outbox
    async with engine.begin() as connection:
        await connection.execute(
            update(outbox).where(outbox.c.published_at.is_(None)).values(published_at=func.now())
        )


BUSY = 2.0  # seconds of the busy window in the NOTIFY test


async def test_a_transaction_writing_rows_notifies_once_and_only_when_no_relay_is_busy(
    engine: AsyncEngine, module_database_url: str
) -> None:
    received: list[tuple[str, str]] = []
    listener = await asyncpg.connect(module_database_url)
    try:
        await listener.add_listener(
            OUTBOX_CHANNEL, lambda _c, _pid, channel, payload: received.append((channel, payload))
        )
        await mark_all_published(engine)
        # A window of BUSY, not the default's 0.2 s: the second transaction must come within it
        # of the first, and a loaded machine (CI's) can take longer than 0.2 s between two.
        await write_events(engine, 5, 1, busy_seconds=BUSY)  # 5 rows, one NOTIFY
        await write_events(engine, 1, 1, busy_seconds=BUSY)  # a young row waits: none
        await asyncio.sleep(BUSY + 0.05)  # nobody took it: it is old now
        await write_events(engine, 1, 1, busy_seconds=BUSY)  # so this one notifies
        await mark_all_published(engine)
        # Notifications arrive in commit order: once this last one is in, any extra one of the
        # transactions before it would be too.
        await write_events(engine, 3, 1, busy_seconds=BUSY)
        await eventually(lambda: len(received) >= 3, what="three notifications")
    finally:
        await listener.close()
    assert received == [(OUTBOX_CHANNEL, SCHEMA)] * 3


async def test_the_relay_delivers_every_row_in_order_and_marks_it_published(
    engine: AsyncEngine, routing: Routing, queues: PostgresQueues, prefix: str
) -> None:
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("reserve") as span:
        written = await write_events(engine, aggregates=7, per_aggregate=12)
    event_ids = [event_id for ids in written.values() for event_id in ids]
    lag_before = {lag.schema: lag for lag in await outbox_lag(engine, [SCHEMA])}
    assert lag_before[SCHEMA].unpublished >= len(event_ids)
    assert lag_before[SCHEMA].oldest_age_seconds is not None

    await drain(relay_on(engine, routing, queues))

    delivered = await deliveries(queues, prefix + "analytics", written)
    assert len(delivered) == len(event_ids)  # exactly once without crashes
    assert_in_order_per_aggregate(written, delivered)
    assert await published_count(engine, event_ids) == len(event_ids)
    (lag_after,) = await outbox_lag(engine, [SCHEMA])
    assert lag_after.unpublished == 0
    assert lag_after.oldest_age_seconds is None
    # The trace context written with the row arrives with the event.
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert all(trace_id in e.trace_context.traceparent for e in delivered)
    # Nothing routes InventoryReserved to shipping.
    assert (await queues.stats(prefix + "shipping")).visible == 0


async def test_racing_relays_deliver_each_row_once_in_order_per_aggregate(
    engine: AsyncEngine, routing: Routing, queues: PostgresQueues, prefix: str
) -> None:
    written = await write_events(engine, aggregates=20, per_aggregate=15)
    event_ids = [event_id for ids in written.values() for event_id in ids]
    relays = [relay_on(engine, routing, queues) for _ in range(6)]

    async def work(relay: OutboxRelay) -> int:
        total = 0
        deadline = time.monotonic() + WITHIN
        while await published_count(engine, event_ids) < len(event_ids):
            total += await relay.relay_once()
            assert time.monotonic() < deadline
        return total

    shares = await asyncio.gather(*(work(relay) for relay in relays))
    delivered = await deliveries(queues, prefix + "analytics", written)
    assert Counter(e.event_id for e in delivered) == Counter(event_ids)
    assert_in_order_per_aggregate(written, delivered)
    assert sum(1 for share in shares if share) >= 2, "the relays did not really share the work"


@pytest.fixture
def relay_processes(
    module_database_url: str, prefix: str, tmp_path: Path
) -> Iterator[PythonProcesses]:
    """`python -m workers.outbox_relay` processes started by a test, all stopped at its end."""
    env = {
        **os.environ,
        "DATABASE_URL": module_database_url,
        "MIGRATE_ON_START": "false",
        "RELAY_SCHEMAS": SCHEMA,
        "RELAY_QUEUE_PREFIX": prefix,
        "RELAY_BATCH_SIZE": "2000",
        "RELAY_POLL_INTERVAL_SECONDS": "0.05",
        "LOG_LEVEL": "INFO",
    }
    processes = PythonProcesses("workers.outbox_relay", env, tmp_path, "relay-{}.log")
    yield processes
    processes.stop_all()


async def test_a_relay_killed_mid_batch_loses_nothing_and_the_next_one_finishes(
    engine: AsyncEngine,
    routing: Routing,
    queues: PostgresQueues,
    prefix: str,
    relay_processes: PythonProcesses,
) -> None:
    written = await write_events(engine, aggregates=40, per_aggregate=40)
    event_ids = [event_id for ids in written.values() for event_id in ids]
    analytics = prefix + "analytics"

    first = relay_processes.start()
    deadline = time.monotonic() + WITHIN
    while (await queues.stats(analytics)).visible == 0:
        assert first.poll() is None, "the relay exited"
        assert time.monotonic() < deadline, "the relay delivered nothing"
        await asyncio.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    delivered_by_first = len(await deliveries(queues, analytics, written))
    marked_by_first = await published_count(engine, event_ids)
    # Mid-batch: some rows reached the bus but the transaction marking them never committed.
    assert delivered_by_first > marked_by_first
    assert marked_by_first < len(event_ids)

    second = relay_processes.start()
    deadline = time.monotonic() + WITHIN
    while await published_count(engine, event_ids) < len(event_ids):
        assert second.poll() is None, "the second relay exited"
        assert time.monotonic() < deadline, "the second relay did not finish"
        await asyncio.sleep(0.05)

    delivered = await deliveries(queues, analytics, written)
    counts = Counter(e.event_id for e in delivered)
    assert set(counts) == set(event_ids)  # every row delivered at least once
    assert len(delivered) > len(event_ids)  # the unmarked part of the batch went out twice
    assert_in_order_per_aggregate(written, delivered)


async def test_sigterm_stops_the_relay_process_cleanly(
    engine: AsyncEngine, queues: PostgresQueues, prefix: str, relay_processes: PythonProcesses
) -> None:
    written = await write_events(engine, aggregates=2, per_aggregate=2)
    event_ids = [event_id for ids in written.values() for event_id in ids]
    process = relay_processes.start()
    deadline = time.monotonic() + WITHIN
    while await published_count(engine, event_ids) < len(event_ids):
        assert process.poll() is None
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=WITHIN) == 0
    log = (relay_processes.log_dir / "relay-0.log").read_text()
    assert "outbox relay stopped" in log


async def listen_backends(engine: AsyncEngine, channel: str) -> set[int]:
    """The server pids of the LISTEN connections kept for `channel` (by application name)."""
    async with engine.connect() as connection:
        pids = await connection.scalars(
            text(
                "SELECT pid FROM pg_stat_activity"
                " WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": f"listen:{channel}"},
        )
        return set(pids)


async def test_an_idle_relay_that_would_poll_hourly_is_woken_by_new_rows_even_after_its_listen_dies(
    engine: AsyncEngine, relay_processes: PythonProcesses
) -> None:
    relay_processes.env["RELAY_POLL_INTERVAL_SECONDS"] = "3600"
    process = relay_processes.start()
    log = relay_processes.log_dir / "relay-0.log"
    await eventually(
        lambda: "listening on outbox" in log.read_text(), what="the relay LISTENs", within=WITHIN
    )
    # The relay killed by the test before may have left a backend that is still going away.
    first = await listen_backends(engine, OUTBOX_CHANNEL)

    async def write_and_see_published() -> None:
        written = await write_events(engine, aggregates=3, per_aggregate=2)
        event_ids = [event_id for ids in written.values() for event_id in ids]
        await until_equal(lambda: published_count(engine, event_ids), len(event_ids))

    await write_and_see_published()  # found by its first pass, or woken
    await write_and_see_published()  # idle now: only a NOTIFY makes it look within the hour
    assert process.poll() is None

    async with engine.connect() as connection:
        await connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) AS pid"),
            {"pids": list(first)},
        )
    await eventually(
        lambda: _reopened(engine, first), what="the relay LISTENs again", within=WITHIN
    )
    await write_and_see_published()
    assert process.poll() is None


async def _reopened(engine: AsyncEngine, before: set[int]) -> bool:
    now = await listen_backends(engine, OUTBOX_CHANNEL)
    return bool(now) and not now & before
