"""One contract for both adapters of the queue port: PostgreSQL queues and SQS (moto in server
mode). Visibility, receive counts, dead-lettering after the maximum receives, retry_later (a
fresh receive budget after a delay), redrive, stats."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.queues import (
    MAX_RETRY_DELAY_SECONDS,
    QueueDefinition,
    Queues,
    UnknownQueue,
)
from marketplace_platform.queues.postgres import PostgresQueues
from marketplace_platform.queues.provision import create_sqs_queues
from marketplace_platform.queues.sqs import SqsQueues
from tests.support.polling import eventually

MAX_RECEIVES = 2
VISIBILITY = 1


pytestmark = pytest.mark.engine(db_pool_size=20)


@pytest.fixture
def definition() -> QueueDefinition:
    suffix = uuid.uuid4().hex[:10]
    return QueueDefinition(f"work-{suffix}", f"work-{suffix}-dlq", MAX_RECEIVES, VISIBILITY)


@pytest.fixture(params=["local", "sqs"])
async def queues(
    request: pytest.FixtureRequest, definition: QueueDefinition, engine: AsyncEngine
) -> Queues:
    if request.param == "local":
        return PostgresQueues(engine, [definition])
    request.getfixturevalue("aws_credentials")
    endpoint = request.getfixturevalue("moto_endpoint")
    import boto3  # type: ignore[import-untyped]

    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    await asyncio.to_thread(create_sqs_queues, client, [definition])
    return SqsQueues(client, [definition])


async def test_a_sent_message_is_received_once_until_deleted(
    queues: Queues, definition: QueueDefinition
) -> None:
    message_id = await queues.send(definition.name, "hello")
    (received,) = await queues.receive(definition.name, visibility_timeout_seconds=30)
    assert (received.message_id, received.body, received.receive_count) == (message_id, "hello", 1)
    assert await queues.receive(definition.name) == []
    stats = await queues.stats(definition.name)
    assert (stats.visible, stats.in_flight) == (0, 1)
    await queues.delete(definition.name, received.receipt_handle)
    stats = await queues.stats(definition.name)
    assert (stats.visible, stats.in_flight) == (0, 0)


async def test_an_undeleted_message_comes_back_after_its_visibility_timeout(
    queues: Queues, definition: QueueDefinition
) -> None:
    await queues.send(definition.name, "again")
    (first,) = await queues.receive(definition.name)
    assert await queues.receive(definition.name) == []
    (second,) = await eventually(lambda: queues.receive(definition.name))
    assert second.message_id == first.message_id
    assert second.receive_count == 2
    assert second.receipt_handle != first.receipt_handle


async def test_change_visibility_to_zero_returns_the_message_at_once(
    queues: Queues, definition: QueueDefinition
) -> None:
    await queues.send(definition.name, "now")
    (first,) = await queues.receive(definition.name, visibility_timeout_seconds=60)
    await queues.change_visibility(definition.name, first.receipt_handle, 0)
    (second,) = await queues.receive(definition.name, visibility_timeout_seconds=60)
    assert second.message_id == first.message_id


async def test_a_long_poll_returns_a_message_sent_while_waiting(
    queues: Queues, definition: QueueDefinition
) -> None:
    waiting = asyncio.create_task(queues.receive(definition.name, wait_seconds=5))
    await asyncio.sleep(0.2)  # let the poll start first; what is asserted is the outcome
    await queues.send(definition.name, "late")
    received = await waiting
    assert [message.body for message in received] == ["late"]


async def test_a_batch_keeps_its_order_of_ids_and_every_message_arrives(
    queues: Queues, definition: QueueDefinition
) -> None:
    bodies = [f"m{i}" for i in range(25)]
    ids = await queues.send_batch(definition.name, bodies)
    assert len(set(ids)) == 25
    seen: dict[str, str] = {}
    deadline = time.monotonic() + 10
    while len(seen) < 25 and time.monotonic() < deadline:
        for message in await queues.receive(definition.name, max_messages=10):
            seen[message.message_id] = message.body
            await queues.delete(definition.name, message.receipt_handle)
    assert seen == dict(zip(ids, bodies, strict=True))


async def test_a_poison_message_goes_to_the_dlq_after_the_maximum_receives_and_redrive_returns_it(
    queues: Queues, definition: QueueDefinition
) -> None:
    good = [f"good-{i}" for i in range(5)]
    await queues.send_batch(definition.name, [*good, "poison"])
    handled: list[str] = []
    poison_receives = 0
    # A consumer that handles every message but the poison one, which it releases at once.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        batch = await queues.receive(definition.name, max_messages=10)
        if not batch and len(handled) == len(good) and poison_receives >= MAX_RECEIVES:
            break
        for message in batch:
            if message.body == "poison":
                poison_receives += 1
                await queues.change_visibility(definition.name, message.receipt_handle, 0)
            else:
                handled.append(message.body)
                await queues.delete(definition.name, message.receipt_handle)
    assert sorted(handled) == sorted(good)
    assert poison_receives == MAX_RECEIVES
    dead = await queues.peek(definition.dead_letter_queue)
    assert [message.body for message in dead] == ["poison"]
    queue_stats = await queues.stats(definition.name)
    assert (queue_stats.visible, queue_stats.in_flight) == (0, 0)

    assert await queues.redrive(definition.name) == 1
    (returned,) = await eventually(lambda: queues.receive(definition.name))
    assert returned.body == "poison"
    assert returned.receive_count == 1
    dlq_stats = await queues.stats(definition.dead_letter_queue)
    assert (dlq_stats.visible, dlq_stats.in_flight) == (0, 0)


async def test_retry_later_gives_a_fresh_receive_budget_so_the_message_never_dead_letters(
    queues: Queues, definition: QueueDefinition
) -> None:
    await queues.send(definition.name, "dependency down")
    for attempt in range(3):
        # Use up the receive budget but for the last receive, then retry later instead.
        for receive in range(1, MAX_RECEIVES + 1):
            (message,) = await eventually(lambda: queues.receive(definition.name))
            assert (message.body, message.receive_count) == ("dependency down", receive)
            assert message.retry_attempt == attempt
            if receive < MAX_RECEIVES:
                await queues.change_visibility(definition.name, message.receipt_handle, 0)
        await queues.retry_later(definition.name, message, 0)

    (back,) = await eventually(lambda: queues.receive(definition.name))
    assert (back.body, back.receive_count, back.retry_attempt) == ("dependency down", 1, 3)
    await queues.delete(definition.name, back.receipt_handle)
    dlq_stats = await queues.stats(definition.dead_letter_queue)
    assert (dlq_stats.visible, dlq_stats.in_flight) == (0, 0)
    queue_stats = await queues.stats(definition.name)
    assert (queue_stats.visible, queue_stats.in_flight) == (0, 0)


async def test_retry_later_hides_the_message_for_its_delay(
    queues: Queues, definition: QueueDefinition
) -> None:
    await queues.send(definition.name, "later")
    (first,) = await queues.receive(definition.name, visibility_timeout_seconds=60)
    retried_at = time.monotonic()
    await queues.retry_later(definition.name, first, 2)
    assert await queues.receive(definition.name) == []
    (back,) = await eventually(lambda: queues.receive(definition.name))
    assert time.monotonic() - retried_at >= 1.0  # SQS timestamps have second granularity
    assert (back.body, back.retry_attempt) == ("later", 1)


async def test_retry_later_refuses_a_delay_sqs_cannot_take(
    queues: Queues, definition: QueueDefinition
) -> None:
    await queues.send(definition.name, "too late")
    (message,) = await queues.receive(definition.name, visibility_timeout_seconds=60)
    for delay in (-1, MAX_RETRY_DELAY_SECONDS + 1):
        with pytest.raises(ValueError, match="retry delay"):
            await queues.retry_later(definition.name, message, delay)
    await queues.delete(definition.name, message.receipt_handle)
    stats = await queues.stats(definition.name)
    assert (stats.visible, stats.in_flight) == (0, 0)


async def test_racing_receivers_never_share_a_message_in_flight(
    queues: Queues, definition: QueueDefinition, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["queues"] == "sqs":
        # SQS standard queues are at-least-once: a copy may reach a second receiver (and moto's
        # server does so under load). The local queue promises more; consumers dedupe either way.
        pytest.skip("SQS standard queues do not promise exclusive receives")
    ids = await queues.send_batch(definition.name, [f"r{i}" for i in range(40)])
    claims: list[str] = []

    async def receiver() -> None:
        while True:
            batch = await queues.receive(
                definition.name, max_messages=3, visibility_timeout_seconds=60
            )
            if not batch:
                return
            claims.extend(message.message_id for message in batch)

    await asyncio.gather(*(receiver() for _ in range(8)))
    assert sorted(claims) == sorted(ids)


async def test_stats_report_depth_and_age(queues: Queues, definition: QueueDefinition) -> None:
    await queues.send_batch(definition.name, ["a", "b", "c"])
    await queues.receive(definition.name, visibility_timeout_seconds=60)
    stats = await queues.stats(definition.name)
    assert (stats.name, stats.visible, stats.in_flight) == (definition.name, 2, 1)
    if isinstance(queues, PostgresQueues):
        assert stats.oldest_age_seconds is not None
        assert stats.oldest_age_seconds >= 0


async def test_an_undeclared_queue_is_refused(queues: Queues) -> None:
    with pytest.raises(UnknownQueue):
        await queues.send("nobody-declared-this", "x")
