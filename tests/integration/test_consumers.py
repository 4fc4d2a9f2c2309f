"""The email, invoice and analytics consumers on real PostgreSQL: every event delivered twice,
concurrently and in shuffled order, has one effect (files, objects, fact lines, inbox rows)."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.events.v1 import envelope_pb2, order_events_pb2
from marketplace_platform.db import UnitOfWork, unit_of_work_factory
from marketplace_platform.ids import new_id
from marketplace_platform.mailer.local import LocalOutboxMailer
from marketplace_platform.object_store.local import LocalObjectStore
from marketplace_platform.outbox import OutboxWriter
from tests.support.events import order_cancelled, order_placed, payment_refunded
from workers.consumers import tables
from workers.consumers.analytics import handlers as analytics
from workers.consumers.analytics.sink import JsonLinesFactSink
from workers.consumers.consumer import Consumer, DeliveredEvent, Outcome, process, process_batch
from workers.consumers.email import handlers as email
from workers.consumers.invoice import handlers as invoice

pytestmark = pytest.mark.engine(db_pool_size=20)


@pytest.fixture(scope="module")
def unit_of_work(engine: AsyncEngine) -> Callable[[], UnitOfWork]:
    return unit_of_work_factory(engine, OutboxWriter(tables.outbox, producer="consumers"))


def twice_shuffled(envelopes: list[envelope_pb2.EventEnvelope]) -> list[envelope_pb2.EventEnvelope]:
    """Every envelope twice (the second a decoded copy, as a redelivery is), shuffled."""
    copies = [envelope_pb2.EventEnvelope.FromString(e.SerializeToString()) for e in envelopes]
    deliveries = envelopes + copies
    random.Random(7).shuffle(deliveries)
    return deliveries


async def deliver_all(
    consumer: Consumer,
    deliveries: list[envelope_pb2.EventEnvelope],
    unit_of_work: Callable[[], UnitOfWork],
) -> list[Outcome]:
    """Deliver every envelope at once, as several consumer processes would."""
    return list(await asyncio.gather(*(process(consumer, e, unit_of_work) for e in deliveries)))


async def inbox_rows(engine: AsyncEngine, consumer: str, ids: list[str]) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            select(func.count())
            .select_from(tables.inbox)
            .where(
                tables.inbox.c.consumer == consumer,
                tables.inbox.c.event_id.in_([uuid.UUID(i) for i in ids]),
            )
        )
    return int(count or 0)


async def test_email_sends_one_confirmation_and_one_notice_per_order(
    tmp_path: Path, engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    mailer = LocalOutboxMailer(tmp_path / "outbox")
    consumer = Consumer(
        email.CONSUMER,
        email.handlers(email.EmailDeps(mailer, "shop@marketplace.local", "customers.invalid")),
    )
    orders = [str(new_id()) for _ in range(3)]
    events = [order_placed(o) for o in orders] + [order_cancelled(str(new_id()))]

    outcomes = await deliver_all(consumer, twice_shuffled(events), unit_of_work)

    assert sorted(outcomes).count(Outcome.HANDLED) == 4
    assert sorted(outcomes).count(Outcome.DUPLICATE) == 4
    sent = [path.name for path in mailer.sent()]
    assert sorted(sent) == sorted(
        [f"order-{o}-confirmation.eml" for o in orders]
        + [f"order-{events[-1].aggregate_id}-cancelled.eml"]
    )
    body = (mailer.folder / f"order-{orders[0]}-confirmation.eml").read_text()
    assert "Total:    27.00 USD" in body
    assert "To: customer-1@customers.invalid" in body
    assert await inbox_rows(engine, email.CONSUMER, [e.event_id for e in events]) == 4


async def test_invoice_writes_one_immutable_document_per_order_and_refund(
    tmp_path: Path, engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    store = LocalObjectStore(tmp_path / "documents")
    consumer = Consumer(invoice.CONSUMER, invoice.handlers(store))
    orders = [str(new_id()) for _ in range(3)]
    events = [order_placed(o) for o in orders] + [payment_refunded(orders[0])]
    # A cancellation is routed to invoicing too, and leaves no document.
    events.append(order_cancelled(str(new_id())))

    outcomes = await deliver_all(consumer, twice_shuffled(events), unit_of_work)

    assert outcomes.count(Outcome.HANDLED) == 4
    assert outcomes.count(Outcome.IGNORED) == 2
    keys = await store.keys()
    assert len(keys) == 4
    assert sorted(k for k in keys if k.startswith("invoices/")) == sorted(
        invoice.invoice_key(o) for o in orders
    )
    document = json.loads(await store.get(invoice.invoice_key(orders[1])) or b"{}")
    assert document["invoice_number"] == f"INV-{orders[1]}"
    assert document["total"] == {"amount_minor": 2700, "currency": "USD"}


async def test_a_redelivery_after_a_lost_inbox_commit_keeps_the_first_invoice(
    tmp_path: Path, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    store = LocalObjectStore(tmp_path / "documents")
    order = str(new_id())
    placed = order_placed(order)
    first = invoice.render_invoice(
        DeliveredEvent(placed, order_events_pb2.OrderPlaced.FromString(
            placed.payload.value
        ))
    )  # fmt: skip
    # The effect happened but the inbox row never committed: the event is handled again.
    await store.put_if_absent(invoice.invoice_key(order), first, content_type="application/json")
    consumer = Consumer(invoice.CONSUMER, invoice.handlers(store))

    assert await process(consumer, placed, unit_of_work) is Outcome.HANDLED
    assert await store.keys("invoices/") == [invoice.invoice_key(order)]
    assert await store.get(invoice.invoice_key(order)) == first


async def test_analytics_appends_one_fact_per_event(
    tmp_path: Path, engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    sink = JsonLinesFactSink(tmp_path / "facts.jsonl")
    # Two sinks on one file, as two analytics processes would have.
    other = JsonLinesFactSink(tmp_path / "facts.jsonl")
    consumers = [
        Consumer(analytics.CONSUMER, analytics.handlers(sink)),
        Consumer(analytics.CONSUMER, analytics.handlers(other)),
    ]
    orders = [str(new_id()) for _ in range(5)]
    events = [order_placed(o) for o in orders] + [order_cancelled(o) for o in orders[:2]]
    deliveries = twice_shuffled(events)

    outcomes = await asyncio.gather(
        *(process(consumers[i % 2], e, unit_of_work) for i, e in enumerate(deliveries))
    )

    assert outcomes.count(Outcome.HANDLED) == len(events)
    facts = sink.facts()
    assert sorted(f["fact_id"] for f in facts) == sorted(e.event_id for e in events)
    placed = next(f for f in facts if f["fact_id"] == events[0].event_id)
    assert placed["event"] == "OrderPlaced"
    assert placed["data"]["total"] == {"amount_minor": "2700", "currency": "USD"}


async def test_analytics_batches_racing_in_the_inbox_append_each_fact_once(
    tmp_path: Path, engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    sinks = [JsonLinesFactSink(tmp_path / "facts.jsonl") for _ in range(2)]
    consumers = [
        Consumer(analytics.CONSUMER, analytics.handlers(sink), analytics.record_batch(sink))
        for sink in sinks
    ]
    events = [order_placed(str(new_id())) for _ in range(12)]
    deliveries = twice_shuffled(events)
    batches = [deliveries[start : start + 4] for start in range(0, len(deliveries), 4)]

    outcomes = await asyncio.gather(
        *(process_batch(consumers[i % 2], b, unit_of_work) for i, b in enumerate(batches))
    )

    flat = [outcome for batch in outcomes for outcome in batch]
    assert flat.count(Outcome.HANDLED) == len(events)
    assert flat.count(Outcome.DUPLICATE) == len(events)
    assert sorted(f["fact_id"] for f in sinks[0].facts()) == sorted(e.event_id for e in events)
    assert await inbox_rows(engine, analytics.CONSUMER, [e.event_id for e in events]) == 12


async def test_analytics_file_sink_repeats_nothing_even_without_the_inbox(tmp_path: Path) -> None:
    sink = JsonLinesFactSink(tmp_path / "facts.jsonl")
    event = order_placed(str(new_id()))
    fact = {"event": "OrderPlaced"}
    occurred = event.occurred_at.ToDatetime()

    added = [await sink.append(event.event_id, occurred, fact) for _ in range(3)]
    # A writer that crashed mid-line left a torn line; the next append cuts it off.
    sink.path.write_bytes(sink.path.read_bytes() + b'{"fact_id":"torn')
    again = JsonLinesFactSink(sink.path)
    added.append(await again.append(str(new_id()), occurred, fact))

    assert added == [True, False, False, True]
    assert len(sink.facts()) == 2


async def test_a_failing_handler_records_nothing_and_the_retry_handles_it(
    unit_of_work: Callable[[], UnitOfWork], engine: AsyncEngine
) -> None:
    attempts: list[int] = []

    async def flaky(event: object, uow: UnitOfWork) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("the effect failed")

    placed = order_placed(str(new_id()))
    consumer = Consumer("flaky", {placed.event_type: flaky})

    with pytest.raises(RuntimeError):
        await process(consumer, placed, unit_of_work)
    assert await inbox_rows(engine, "flaky", [placed.event_id]) == 0
    assert await process(consumer, placed, unit_of_work) is Outcome.HANDLED
    assert await process(consumer, placed, unit_of_work) is Outcome.DUPLICATE
    assert len(attempts) == 2


async def test_the_consumer_span_continues_the_producers_trace(
    tmp_path: Path, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    placed = order_placed(str(new_id()))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    placed.trace_context.traceparent = f"00-{trace_id}-{parent_id}-01"
    consumer = Consumer(invoice.CONSUMER, invoice.handlers(LocalObjectStore(tmp_path)))

    await process(consumer, placed, unit_of_work, tracer=provider.get_tracer("test"))

    (span,) = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == parent_id
    assert span.attributes is not None
    assert span.attributes["marketplace.outcome"] == "handled"
