"""The consumer loop on the real PostgreSQL queues, and a consumer as its own process: messages
delivered twice have one effect and are deleted; a poison message lands in the DLQ after the
maximum receives; a message whose dependency is down (a real gRPC UNAVAILABLE) outlives its
receive budget and is handled once the dependency is back; `python -m workers.consumers.invoice`
consumes and stops cleanly on SIGTERM. Batches: a batch holding a poison event delivers the
others once and the poison one follows the retry/DLQ rules; an idle consumer process that would
poll hourly is woken by each send, also after its LISTEN backend is terminated; two analytics
processes on one queue record each of many events, each sent twice, exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import grpc
import pytest
import sqlalchemy.exc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from local_supervisor.embedded import free_port
from marketplace.events.v1 import order_events_pb2
from marketplace_platform.channels import open_channel
from marketplace_platform.db import UnitOfWork, create_engine, unit_of_work_factory
from marketplace_platform.event_bus import decode_message_body
from marketplace_platform.event_bus.local import bus_event
from marketplace_platform.ids import new_id
from marketplace_platform.object_store.local import LocalObjectStore
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.queues import QueueDefinition, ReceivedMessage
from marketplace_platform.queues.postgres import BUSY_SECONDS, PostgresQueues, queue_channel
from marketplace_platform.settings import ServiceSettings
from tests.support.events import order_placed
from tests.support.polling import eventually
from tests.support.processes import PythonProcesses, python_module
from workers.consumers import tables
from workers.consumers.consumer import Consumer, DeliveredEvent
from workers.consumers.invoice import handlers as invoice
from workers.consumers.loop import ConsumerLoop, LoopOptions, is_transient

WITHIN = 30.0


@pytest.fixture(scope="module")
def unit_of_work(engine: AsyncEngine) -> Callable[[], UnitOfWork]:
    return unit_of_work_factory(engine, OutboxWriter(tables.outbox, producer="invoice"))


def a_queue(max_receives: int = 3) -> QueueDefinition:
    name = f"invoice-{new_id().hex[-10:]}"
    return QueueDefinition(name, f"{name}-dlq", max_receives, 30)


class HealthCaller:
    """A handler whose dependency is a real gRPC call: health Check of `service` at `target`."""

    def __init__(self, target: str, service: str = "") -> None:
        self.target = target
        self.service = service
        self.failures: list[grpc.StatusCode] = []
        self.handled: list[str] = []

    def consumer(self) -> Consumer:
        """A consumer of its own (its own inbox key) that calls the dependency per OrderPlaced."""
        name = f"probe-{new_id().hex[-10:]}"
        return Consumer(name, {order_events_pb2.OrderPlaced.DESCRIPTOR.full_name: self.handle})

    async def handle(self, event: DeliveredEvent, uow: UnitOfWork) -> None:
        """Call the dependency; its failure (the AioRpcError itself) fails the delivery."""
        # A channel per delivery, as fresh as a restarted consumer's: no reconnect backoff
        # carried over from the outage decides when the test may end.
        channel = open_channel(self.target, default_timeout=2.0)
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the stub types lack aio methods
        try:
            await stub.Check(health_pb2.HealthCheckRequest(service=self.service))
        except grpc.aio.AioRpcError as error:
            self.failures.append(error.code())
            raise
        finally:
            await channel.close()
        self.handled.append(str(event.event_id))


async def serving_health(port: int) -> grpc.aio.Server:
    """A real grpc.aio server on 127.0.0.1:`port` answering health checks (SERVING for '')."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


class RecordingQueues(PostgresQueues):
    """The real PostgreSQL queues, noting each retry_later's attempt counter and delay."""

    def __init__(self, engine: AsyncEngine, definitions: list[QueueDefinition]) -> None:
        super().__init__(engine, definitions)
        self.retries: list[tuple[int, int]] = []

    async def retry_later(self, queue: str, message: ReceivedMessage, delay_seconds: int) -> None:
        """Note (attempts so far, delay), then retry later for real."""
        self.retries.append((message.retry_attempt, delay_seconds))
        await super().retry_later(queue, message, delay_seconds)


def fast_retries() -> LoopOptions:
    """Failed messages of either kind come straight back (no backoff), so retries add up at once."""
    return LoopOptions(
        wait_seconds=0,
        retry_base_seconds=0.001,
        retry_max_seconds=0.001,
        unavailable_base_seconds=0.001,
        unavailable_max_seconds=0.001,
    )


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


async def test_a_message_outlives_a_dependency_down_for_longer_than_its_receive_budget(
    engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    queue = a_queue(max_receives=2)
    queues = RecordingQueues(engine, [queue])
    port = free_port()
    caller = HealthCaller(f"127.0.0.1:{port}")  # nothing listens there yet: UNAVAILABLE
    loop = ConsumerLoop(caller.consumer(), queues, queue.name, unit_of_work, fast_retries())
    placed = order_placed(str(new_id()))
    await queues.send(queue.name, json.dumps(bus_event(placed)))

    async with asyncio.timeout(WITHIN):
        while len(caller.failures) < 3 * queue.max_receive_count:
            await loop.poll_once()
            assert (await queues.stats(queue.dead_letter_queue)).visible == 0, "dead-lettered"
    assert set(caller.failures) == {grpc.StatusCode.UNAVAILABLE}

    server = await serving_health(port)  # the dependency is back
    try:
        async with asyncio.timeout(WITHIN):
            while not caller.handled:
                await loop.poll_once()
    finally:
        await server.stop(None)

    assert caller.handled == [placed.event_id]
    # Every failure was retried later, its attempt counter carried by the queue from one to
    # the next (so the backoff grows), and the receive budget never ran out.
    attempts = [attempt for attempt, _ in queues.retries]
    assert attempts == list(range(len(caller.failures)))
    assert await queues.peek(queue.dead_letter_queue) == []
    stats = await queues.stats(queue.name)
    assert (stats.visible, stats.in_flight) == (0, 0)


async def test_a_database_that_is_away_is_transient_and_a_bad_statement_is_not(
    engine: AsyncEngine,
) -> None:
    failures: dict[str, BaseException] = {}
    async with engine.connect() as connection:
        await connection.execute(text("SET LOCAL statement_timeout = 50"))
        with pytest.raises(sqlalchemy.exc.DBAPIError) as timed_out:
            await connection.execute(text("SELECT pg_sleep(5)"))
        failures["statement timeout"] = timed_out.value
    async with engine.connect() as connection:
        with pytest.raises(sqlalchemy.exc.DBAPIError) as bug:
            await connection.execute(text("SELECT 1 / 0"))
        failures["division by zero"] = bug.value
    async with engine.connect() as victim, engine.connect() as admin:
        pid = (await victim.execute(text("SELECT pg_backend_pid()"))).scalar()
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(sqlalchemy.exc.DBAPIError) as terminated:
            await victim.execute(text("SELECT 1"))
        failures["terminated (a restart)"] = terminated.value
    unreachable = create_engine(
        ServiceSettings(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    )
    try:
        with pytest.raises(ConnectionRefusedError) as refused:
            async with unreachable.connect():
                pass
        failures["connection refused"] = refused.value
    finally:
        await unreachable.dispose()

    assert {name: is_transient(error) for name, error in failures.items()} == {
        "statement timeout": True,
        "division by zero": False,
        "terminated (a restart)": True,
        "connection refused": True,
    }


async def test_a_refusal_from_a_dependency_still_ends_in_the_dead_letter_queue(
    engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    queue = a_queue(max_receives=2)
    queues = PostgresQueues(engine, [queue])
    port = free_port()
    server = await serving_health(port)
    # The server is up and refuses: NOT_FOUND for a service it does not know, every time.
    caller = HealthCaller(f"127.0.0.1:{port}", service="nobody.Knows")
    loop = ConsumerLoop(caller.consumer(), queues, queue.name, unit_of_work, fast_retries())
    body = json.dumps(bus_event(order_placed(str(new_id()))))
    await queues.send(queue.name, body)
    try:
        async with asyncio.timeout(WITHIN):
            while (await queues.stats(queue.dead_letter_queue)).visible == 0:
                await loop.poll_once()
    finally:
        await server.stop(None)

    assert caller.failures == [grpc.StatusCode.NOT_FOUND] * queue.max_receive_count
    (dead,) = await queues.peek(queue.dead_letter_queue)
    assert dead.body == body
    assert caller.handled == []


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
    async with python_module(
        "workers.consumers.invoice", env=env, stderr=asyncio.subprocess.PIPE
    ) as process:
        async with asyncio.timeout(WITHIN):
            while not await store.keys("invoices/"):
                assert process.returncode is None
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WITHIN):
            assert await process.wait() == 0

    assert await store.keys("invoices/") == [invoice.invoice_key(placed.aggregate_id)]


async def inbox_count(engine: AsyncEngine, consumer: str) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM consumers.inbox WHERE consumer = :consumer"),
            {"consumer": consumer},
        )
    return int(count or 0)


async def test_a_batch_with_a_poison_event_delivers_the_others_once_and_dead_letters_it(
    engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork], tmp_path: Path
) -> None:
    queue = a_queue(max_receives=3)
    queues = PostgresQueues(engine, [queue])
    store = LocalObjectStore(tmp_path)
    write_invoice = invoice.handlers(store)[order_events_pb2.OrderPlaced.DESCRIPTOR.full_name]
    poison_order = str(new_id())
    calls: dict[str, int] = {}

    async def invoice_unless_poison(event: DeliveredEvent, uow: UnitOfWork) -> None:
        calls[event.envelope.aggregate_id] = calls.get(event.envelope.aggregate_id, 0) + 1
        if event.envelope.aggregate_id == poison_order:
            raise ValueError("a bug that only this event meets")
        await write_invoice(event, uow)

    name = f"poisoned-{new_id().hex[-10:]}"
    consumer = Consumer(
        name, {order_events_pb2.OrderPlaced.DESCRIPTOR.full_name: invoice_unless_poison}
    )
    loop = ConsumerLoop(consumer, queues, queue.name, unit_of_work, fast_retries())
    good = [order_placed(str(new_id())) for _ in range(5)]
    poison = order_placed(poison_order)
    await queues.send_batch(
        queue.name, [json.dumps(bus_event(e)) for e in [*good[:2], poison, *good[2:]]]
    )

    assert await loop.poll_once() == 6  # one batch, which the poison fails
    assert sorted(await store.keys("invoices/")) == sorted(
        invoice.invoice_key(e.aggregate_id) for e in good
    )
    assert await inbox_count(engine, name) == 5
    assert (await queues.stats(queue.name)).visible + (
        await queues.stats(queue.name)
    ).in_flight == 1

    async with asyncio.timeout(WITHIN):
        while (await queues.stats(queue.dead_letter_queue)).visible == 0:
            await loop.poll_once()
    (dead,) = await queues.peek(queue.dead_letter_queue)
    assert decode_message_body(dead.body).event_id == poison.event_id
    assert calls[poison_order] == queue.max_receive_count + 1  # the batch's try, then its own
    # Those before the poison ran in the batch's try (rolled back), then on their own; those
    # after it only on their own. Each committed once: five invoices, five inbox rows.
    assert [calls[e.aggregate_id] for e in good] == [2, 2, 1, 1, 1]
    assert await inbox_count(engine, name) == 5
    stats = await queues.stats(queue.name)
    assert (stats.visible, stats.in_flight) == (0, 0)


def rules_file(path: Path, queue: QueueDefinition) -> Path:
    """An event rules file that declares `queue` (and routes nothing to it)."""
    path.write_text(
        json.dumps(
            {
                "queues": [
                    {
                        "name": queue.name,
                        "dead_letter_queue": queue.dead_letter_queue,
                        "max_receive_count": queue.max_receive_count,
                        "visibility_timeout_seconds": queue.visibility_timeout_seconds,
                    }
                ],
                "rules": [],
            }
        )
    )
    return path


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


async def test_an_idle_consumer_that_would_poll_hourly_is_woken_by_each_send_after_a_lost_listen(
    tmp_path: Path, engine: AsyncEngine, migrated_database_url: str
) -> None:
    queue = a_queue()
    queues = PostgresQueues(engine, [queue])
    store = LocalObjectStore(tmp_path / "documents")
    env = {
        **os.environ,
        "DATABASE_URL": migrated_database_url,
        "CONSUMER_QUEUE": queue.name,
        "EVENT_RULES_FILE": str(rules_file(tmp_path / "rules.json", queue)),
        "INVOICE_STORE_URL": str(store.root),
        "CONSUMER_POLL_INTERVAL_SECONDS": "3600",
    }
    channel = queue_channel(queue.name)

    async def send_and_see_its_invoice() -> None:
        placed = order_placed(str(new_id()))
        await queues.send(queue.name, json.dumps(bus_event(placed)))
        key = invoice.invoice_key(placed.aggregate_id)

        async def written() -> bool:
            return key in await store.keys("invoices/")

        await eventually(written, what=f"{key} written", within=10)

    async with python_module("workers.consumers.invoice", env=env) as process:
        first = await eventually(
            lambda: listen_backends(engine, channel), what="the consumer LISTENs", within=WITHIN
        )
        await send_and_see_its_invoice()  # found by its first receive, or woken
        await send_and_see_its_invoice()  # idle now: only the NOTIFY makes it look
        async with engine.connect() as connection:
            await connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) AS pid"),
                {"pids": list(first)},
            )

        async def reopened() -> bool:
            now = await listen_backends(engine, channel)
            return bool(now) and not now & first

        await eventually(reopened, what="the consumer LISTENs again", within=WITHIN)
        await send_and_see_its_invoice()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WITHIN):
            assert await process.wait() == 0


async def test_two_analytics_processes_on_one_queue_record_each_event_once(
    tmp_path: Path, engine: AsyncEngine, migrated_database_url: str
) -> None:
    queue = a_queue()
    queues = PostgresQueues(engine, [queue])
    sink_root = tmp_path / "analytics"
    env = {
        **os.environ,
        "DATABASE_URL": migrated_database_url,
        "CONSUMER_QUEUE": queue.name,
        "EVENT_RULES_FILE": str(rules_file(tmp_path / "rules.json", queue)),
        "ANALYTICS_SINK_URL": str(sink_root),
        "LOG_LEVEL": "WARNING",
    }
    processes = PythonProcesses("workers.consumers.analytics", env, tmp_path, "analytics-{}.log")
    events = [order_placed(str(new_id())) for _ in range(60)]
    bodies = [json.dumps(bus_event(e)) for e in events]
    try:
        racers = [processes.start(), processes.start()]
        # Each event twice, in small sends while both consume: copies land in different
        # batches and processes, and race in the inbox.
        for start in range(0, len(bodies), 6):
            chunk = bodies[start : start + 6]
            await queues.send_batch(queue.name, chunk + chunk[::-1])

        async def drained() -> bool:
            stats = await queues.stats(queue.name)
            return (stats.visible, stats.in_flight) == (0, 0)

        await eventually(drained, what="the queue drained", within=WITHIN, interval=0.1)
        assert all(racer.poll() is None for racer in racers)
    finally:
        processes.stop_all()

    # Every line of every order_facts/dt=.../*.jsonl object, duplicates kept to be counted.
    store = LocalObjectStore(sink_root)
    bodies_written = [await store.get(key) or b"" for key in await store.keys("order_facts/dt=")]
    ids = [json.loads(line)["fact_id"] for body in bodies_written for line in body.splitlines()]
    assert sorted(ids) == sorted(e.event_id for e in events)  # each once, none lost
    async with engine.connect() as connection:
        handled = await connection.scalar(
            text(
                "SELECT count(*) FROM consumers.inbox"
                " WHERE consumer = 'analytics' AND event_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": [e.event_id for e in events]},
        )
    assert handled == len(events)
    assert await queues.peek(queue.dead_letter_queue) == []


async def test_a_send_notifies_its_queue_once_unless_a_young_message_still_waits(
    engine: AsyncEngine, migrated_database_url: str
) -> None:
    queue = a_queue()
    queues = PostgresQueues(engine, [queue])
    received: list[str] = []
    listener = await asyncpg.connect(migrated_database_url)
    try:
        await listener.add_listener(
            queue_channel(queue.name), lambda _c, _pid, channel, _p: received.append(channel)
        )
        await queues.send_batch(queue.name, ["a", "b", "c"])  # an empty queue: one NOTIFY
        await queues.send(queue.name, "d")  # "a" became visible just now: its receivers know
        await asyncio.sleep(BUSY_SECONDS + 0.05)  # nobody took it: the next send notifies
        await queues.send(queue.name, "e")
        taken = await queues.receive(queue.name, max_messages=10)
        await queues.delete_batch(queue.name, [m.receipt_handle for m in taken])
        # Notifications arrive in commit order: once this one is in, an extra one would be too.
        await queues.send(queue.name, "f")
        await eventually(lambda: len(received) >= 3, what="three notifications")
    finally:
        await listener.close()
    assert received == [queue_channel(queue.name)] * 3
    assert sorted(m.body for m in taken) == ["a", "b", "c", "d", "e"]
