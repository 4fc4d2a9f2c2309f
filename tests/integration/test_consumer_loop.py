"""The consumer loop on the real PostgreSQL queues, and a consumer as its own process: messages
delivered twice have one effect and are deleted; a poison message lands in the DLQ after the
maximum receives; `python -m workers.consumers.invoice` consumes and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.db import UnitOfWork, create_engine, unit_of_work_factory
from marketplace_platform.ids import new_id
from marketplace_platform.object_store import LocalObjectStore
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.queues import QueueDefinition
from marketplace_platform.settings import ServiceSettings
from tests.integration.test_consumers import order_placed
from workers.consumers import tables
from workers.consumers.consumer import Consumer
from workers.consumers.invoice import handlers as invoice
from workers.consumers.loop import ConsumerLoop, LoopOptions
from workers.event_bus.local import bus_event
from workers.queues.local import PostgresQueues

REPO = Path(__file__).resolve().parents[2]
WITHIN = 30.0


@pytest.fixture(scope="module")
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(ServiceSettings(database_url=migrated_database_url, db_pool_size=10))
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def unit_of_work(engine: AsyncEngine) -> Callable[[], UnitOfWork]:
    return unit_of_work_factory(engine, OutboxWriter(tables.outbox, producer="invoice"))


def a_queue(max_receives: int = 3) -> QueueDefinition:
    name = f"invoice-{new_id().hex[-10:]}"
    return QueueDefinition(name, f"{name}-dlq", max_receives, 30)


async def drain(loop: ConsumerLoop) -> None:
    """Poll until a poll finds nothing left (within a deadline)."""
    async with asyncio.timeout(WITHIN):
        while await loop.poll_once():
            pass


async def test_each_message_twice_makes_one_invoice_and_the_queue_is_emptied(
    tmp_path: Path, engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    queue = a_queue()
    queues = PostgresQueues(engine, [queue])
    store = LocalObjectStore(tmp_path)
    loop = ConsumerLoop(
        Consumer(invoice.CONSUMER, invoice.handlers(store)),
        queues,
        queue.name,
        unit_of_work,
        LoopOptions(batch_size=4, wait_seconds=0),
    )
    events = [order_placed(str(new_id())) for _ in range(5)]
    bodies = [json.dumps(bus_event(e)) for e in events]
    await queues.send_batch(queue.name, bodies + bodies[::-1])

    await drain(loop)

    assert len(await store.keys("invoices/")) == 5
    stats = await queues.stats(queue.name)
    assert (stats.visible, stats.in_flight) == (0, 0)


async def test_a_poison_message_ends_in_the_dead_letter_queue(
    engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork], tmp_path: Path
) -> None:
    queue = a_queue(max_receives=3)
    queues = PostgresQueues(engine, [queue])
    loop = ConsumerLoop(
        Consumer(invoice.CONSUMER, invoice.handlers(LocalObjectStore(tmp_path))),
        queues,
        queue.name,
        unit_of_work,
        # Failed messages come straight back (no backoff), so the receives add up at once.
        LoopOptions(wait_seconds=0, retry_base_seconds=0.001, retry_max_seconds=0.001),
    )
    await queues.send(queue.name, "not an event")

    received = 0
    async with asyncio.timeout(WITHIN):
        while (await queues.stats(queue.dead_letter_queue)).visible == 0:
            received += await loop.poll_once()

    assert received == 3
    (dead,) = await queues.peek(queue.dead_letter_queue)
    assert dead.body == "not an event"
    assert (await queues.stats(queue.name)).visible == 0


async def test_the_invoice_consumer_process_consumes_and_stops_on_sigterm(
    tmp_path: Path, engine: AsyncEngine, migrated_database_url: str
) -> None:
    queue = a_queue()
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {
                "queues": [
                    {
                        "name": queue.name,
                        "dead_letter_queue": queue.dead_letter_queue,
                        "max_receive_count": 3,
                        "visibility_timeout_seconds": 30,
                    }
                ],
                "rules": [],
            }
        )
    )
    queues = PostgresQueues(engine, [queue])
    placed = order_placed(str(new_id()))
    await queues.send(queue.name, json.dumps(bus_event(placed)))
    store = LocalObjectStore(tmp_path / "documents")
    env = {
        **os.environ,
        "DATABASE_URL": migrated_database_url,
        "CONSUMER_QUEUE": queue.name,
        "EVENT_RULES_FILE": str(rules),
        "INVOICE_STORE_URL": str(store.root),
        "CONSUMER_WAIT_SECONDS": "0.2",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.consumers.invoice", cwd=REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(WITHIN):
            while not await store.keys("invoices/"):
                assert process.returncode is None
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WITHIN):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert await store.keys("invoices/") == [invoice.invoice_key(placed.aggregate_id)]
