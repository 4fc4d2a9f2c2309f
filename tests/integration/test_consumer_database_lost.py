"""A consumer holding a batch when its database (which also holds the PostgreSQL queues) dies:
the batch fails, and so does every message's retry_later, since the queue is down too. Those
messages are still the consumer's, hidden for the queue's visibility timeout (60 s for
analytics in the drills). Once the database is back they must come back after their short
retry delay, not after the timeout: a real server of its own (verification.replica) SIGKILLed
under the consumer's handler and started again (crash recovery)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.events.v1 import order_events_pb2
from marketplace_platform.db import UnitOfWork, create_engine, unit_of_work_factory
from marketplace_platform.event_bus.local import bus_event
from marketplace_platform.ids import new_id
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.queues import QueueDefinition
from marketplace_platform.queues.postgres import PostgresQueues
from marketplace_platform.settings import ServiceSettings
from tests.conftest import migrate
from tests.support.events import order_placed
from tests.support.polling import eventually
from verification.replica import ReplicaPair, replica_pair
from workers.consumers import tables
from workers.consumers.consumer import Consumer, DeliveredEvent
from workers.consumers.loop import ConsumerLoop, LoopOptions

pytestmark = pytest.mark.timeout(180)

DATABASE = "marketplace"
EVENTS = 5
VISIBILITY_TIMEOUT = 120  # seconds: far past BACK_WITHIN
BACK_WITHIN = 30.0  # seconds after the restart for every event to be handled
OPTIONS = LoopOptions(
    wait_seconds=0.2,
    retry_base_seconds=0.2,
    retry_max_seconds=1,
    unavailable_base_seconds=1,
    unavailable_max_seconds=1,
)


class KillsItsDatabase:
    """A consumer whose first delivery SIGKILLs the database server under it, mid-transaction."""

    def __init__(self, pair: ReplicaPair) -> None:
        self.pair = pair
        self.killed = asyncio.Event()
        self.name = f"probe-{new_id().hex[-10:]}"

    def consumer(self) -> Consumer:
        return Consumer(self.name, {order_events_pb2.OrderPlaced.DESCRIPTOR.full_name: self.handle})

    async def handle(self, event: DeliveredEvent, uow: UnitOfWork) -> None:
        if not self.killed.is_set():
            self.pair.primary.kill()
            self.killed.set()
        await uow.session.execute(sa.text("SELECT 1"))


async def inbox_rows(engine: AsyncEngine, consumer: str) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            sa.select(sa.func.count()).where(tables.inbox.c.consumer == consumer)
        )
    return int(count or 0)


async def test_a_batch_in_hand_when_the_database_dies_comes_back_soon_after_it_does() -> None:
    async with replica_pair(standby=False) as pair:
        await pair.create_database(DATABASE)
        url = pair.writer_url(DATABASE)
        await migrate(url)
        engine = create_engine(ServiceSettings(database_url=url))
        name = f"probe-{uuid.uuid4().hex[:10]}"
        queue = QueueDefinition(name, f"{name}-dlq", 5, VISIBILITY_TIMEOUT)
        queues = PostgresQueues(engine, [queue])
        for _ in range(EVENTS):
            await queues.send(name, json.dumps(bus_event(order_placed(str(new_id())))))
        probe = KillsItsDatabase(pair)
        uow = unit_of_work_factory(engine, OutboxWriter(tables.outbox, producer="probe"))
        loop = ConsumerLoop(probe.consumer(), queues, name, uow, OPTIONS)
        running = asyncio.create_task(loop.run())
        try:
            await asyncio.wait_for(probe.killed.wait(), timeout=30)
            await asyncio.sleep(1.0)  # the batch and its messages' retries fail meanwhile
            await pair.primary.start()  # crash recovery
            started = time.monotonic()
            # The test looks on an engine of its own: the consumer's may still be backing off.
            observer = create_engine(ServiceSettings(database_url=url))
            seen = PostgresQueues(observer, [queue])

            async def settled() -> bool:
                stats = await seen.stats(name)
                handled = await inbox_rows(observer, probe.name)
                return handled == EVENTS and stats.visible + stats.in_flight == 0

            await eventually(settled, what="every event handled, the queue empty",
                             within=BACK_WITHIN, interval=0.2)  # fmt: skip
            print(f"every event handled {time.monotonic() - started:.1f}s after the restart")
            assert await inbox_rows(observer, probe.name) == EVENTS  # each handled once
            assert (await seen.stats(queue.dead_letter_queue)).visible == 0
            await observer.dispose()
        finally:
            loop.stop()
            await asyncio.wait_for(running, timeout=30)
            await engine.dispose()
