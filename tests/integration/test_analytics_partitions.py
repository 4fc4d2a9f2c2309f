"""The analytics consumer's date-partitioned facts, on real PostgreSQL (the inbox) and in both
object stores (a local folder, and S3 on moto in server mode): facts of two days land under
`order_facts/dt=YYYY-MM-DD/` by their event time in UTC, and are read back by that layout alone
(the dt= folders listed, the JSON lines parsed), each event once, also when a batch fails after
its objects were written (a crash) and its events come again to another process, one by one or
in the same batch."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.events.v1 import envelope_pb2
from marketplace_platform.db import UnitOfWork, unit_of_work_factory
from marketplace_platform.event_bus import unpack_payload
from marketplace_platform.ids import new_id
from marketplace_platform.object_store import ObjectStore
from marketplace_platform.object_store.local import LocalObjectStore
from marketplace_platform.object_store.s3 import S3ObjectStore
from marketplace_platform.outbox import OutboxWriter
from tests.support.events import order_cancelled, order_placed
from workers.consumers import tables
from workers.consumers.analytics import handlers as analytics
from workers.consumers.analytics import written
from workers.consumers.analytics.sink import PartitionedFactSink, read_facts
from workers.consumers.consumer import (
    Consumer,
    DeliveredEvent,
    Outcome,
    process,
    process_batch,
)

OBJECT = re.compile(r"^[0-9a-f]{32}\.jsonl$")
# Late on 30 November in UTC: still 30 November in UTC when written at -05:00 (19:10 local),
# and 1 December just after midnight UTC, which is 30 November in New York.
LATE = datetime(2026, 11, 30, 23, 50, tzinfo=UTC)
NEXT_DAY = datetime(2026, 12, 1, 0, 10, tzinfo=UTC)
NEW_YORK = timezone(timedelta(hours=-5))


@pytest.fixture(scope="module")
def unit_of_work(engine: AsyncEngine) -> Callable[[], UnitOfWork]:
    return unit_of_work_factory(engine, OutboxWriter(tables.outbox, producer="consumers"))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """The facts' root: a folder, or an S3 prefix in a versioned, KMS-encrypted bucket."""
    if request.param == "local":
        return LocalObjectStore(tmp_path / "analytics")
    import boto3  # type: ignore[import-untyped]

    request.getfixturevalue("aws_credentials")
    endpoint = request.getfixturevalue("moto_endpoint")
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint)
    kms = boto3.client("kms", region_name="us-east-1", endpoint_url=endpoint)
    key_id = kms.create_key(Description="exports")["KeyMetadata"]["KeyId"]
    bucket = f"exports-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return S3ObjectStore(s3, bucket, prefix="analytics", kms_key_id=key_id)


def at(envelope: envelope_pb2.EventEnvelope, when: datetime) -> envelope_pb2.EventEnvelope:
    """The envelope as if its producer had written it at `when`."""
    envelope.occurred_at.FromDatetime(when)
    return envelope


def list_partitions(store: ObjectStore) -> dict[str, dict[str, bytes]]:
    """Each dt= folder's objects by name, found by listing the layout, not through the sink."""
    found: dict[str, dict[str, bytes]] = {}
    if isinstance(store, LocalObjectStore):
        for folder in sorted((store.root / "order_facts").iterdir()):
            found[folder.name] = {f.name: f.read_bytes() for f in folder.iterdir()}
        return found
    assert isinstance(store, S3ObjectStore)
    client: Any = store._client
    base = f"{store.prefix}/order_facts/"
    listed = client.list_objects_v2(Bucket=store.bucket, Prefix=base, Delimiter="/")
    for common in listed.get("CommonPrefixes", []):
        folder = common["Prefix"]
        objects = client.list_objects_v2(Bucket=store.bucket, Prefix=folder)["Contents"]
        found[folder[len(base) :].rstrip("/")] = {
            item["Key"][len(folder) :]: client.get_object(Bucket=store.bucket, Key=item["Key"])[
                "Body"
            ].read()
            for item in objects
        }
    return found


def lines_by_day(partitions: dict[str, dict[str, bytes]]) -> dict[str, list[dict[str, Any]]]:
    """Every JSON line of every object, by partition (duplicates kept, to be counted)."""
    return {
        folder: [json.loads(raw) for body in objects.values() for raw in body.splitlines()]
        for folder, objects in partitions.items()
    }


async def test_facts_of_two_days_are_read_back_by_their_partitions(
    store: ObjectStore, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    sink = PartitionedFactSink(store)
    consumer = Consumer(analytics.CONSUMER, analytics.handlers(sink), analytics.record_batch(sink))
    orders = [str(new_id()) for _ in range(3)]
    late = [at(order_placed(o), LATE.astimezone(NEW_YORK)) for o in orders]
    next_day = [at(order_cancelled(o), NEXT_DAY) for o in orders[:2]]
    events = late + next_day
    # Each event twice, in batches mixing both days: the copies are duplicates in the inbox.
    copies = [envelope_pb2.EventEnvelope.FromString(e.SerializeToString()) for e in events]
    deliveries = [*events[::2], *copies[1::2], *events[1::2], *copies[::2]]
    batches = [deliveries[start : start + 3] for start in range(0, len(deliveries), 3)]

    outcomes = [o for b in batches for o in await process_batch(consumer, b, unit_of_work)]

    assert Counter(outcomes) == {Outcome.HANDLED: 5, Outcome.DUPLICATE: 5}
    partitions = list_partitions(store)
    assert sorted(partitions) == ["dt=2026-11-30", "dt=2026-12-01"]
    assert all(OBJECT.match(name) for objects in partitions.values() for name in objects)
    facts = lines_by_day(partitions)
    assert sorted(f["fact_id"] for f in facts["dt=2026-11-30"]) == sorted(e.event_id for e in late)
    assert sorted(f["fact_id"] for f in facts["dt=2026-12-01"]) == sorted(
        e.event_id for e in next_day
    )
    placed = next(f for f in facts["dt=2026-11-30"] if f["fact_id"] == late[0].event_id)
    assert placed["event"] == "OrderPlaced"
    assert placed["occurred_at"] == "2026-11-30T23:50:00+00:00"
    assert placed["aggregate_id"] == orders[0]
    assert placed["data"]["total"] == {"amount_minor": "2700", "currency": "USD"}
    read_back = await read_facts(store)
    assert {day: {f["fact_id"]: f for f in day_facts} for day, day_facts in read_back.items()} == {
        day.removeprefix("dt="): {f["fact_id"]: f for f in day_facts}
        for day, day_facts in facts.items()
    }


def analytics_consumer(store: ObjectStore) -> Consumer:
    """An analytics consumer of a process of its own: its sink knows nothing yet."""
    sink = PartitionedFactSink(store)
    return Consumer(analytics.CONSUMER, analytics.handlers(sink), analytics.record_batch(sink))


async def still_recorded(engine: AsyncEngine, events: list[envelope_pb2.EventEnvelope]) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            select(func.count())
            .select_from(tables.analytics_written)
            .where(tables.analytics_written.c.fact_id.in_([uuid.UUID(e.event_id) for e in events]))
        )
    return int(count or 0)


async def test_a_batch_failing_after_its_write_records_each_fact_once_on_redelivery(
    store: ObjectStore, engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    events = [at(order_placed(str(new_id())), LATE) for _ in range(3)]
    events.append(at(order_cancelled(str(new_id())), NEXT_DAY))

    async def settle_fails(uow: UnitOfWork) -> None:
        raise RuntimeError("the process died before its commit")

    with pytest.raises(RuntimeError):
        await process_batch(analytics_consumer(store), events, unit_of_work, settle=settle_fails)
    written_first = list_partitions(store)  # the objects are there, the inbox rows are not
    recorded_after_failure = await still_recorded(engine, events)
    # Another process is given them one by one (the loop's fallback, or another grouping).
    other = analytics_consumer(store)
    one_by_one = [await process(other, e, unit_of_work) for e in events]
    # A third process given the first batch as it was: same facts, same object names.
    third = PartitionedFactSink(store)
    delivered = [DeliveredEvent(e, unpack_payload(e)) for e in events]
    repeated = await third.append_many(
        [(str(d.event_id), d.occurred_at, analytics.fact_of(d)) for d in delivered]
    )

    assert recorded_after_failure == 4
    assert one_by_one == [Outcome.HANDLED] * 4
    assert repeated == 0
    assert await process_batch(other, events, unit_of_work) == [Outcome.DUPLICATE] * 4
    assert list_partitions(store) == written_first
    counts = Counter(f["fact_id"] for day in lines_by_day(written_first).values() for f in day)
    assert counts == dict.fromkeys((e.event_id for e in events), 1)
    assert await still_recorded(engine, events) == 0  # forgotten with the inbox rows


async def test_an_attempt_that_died_before_its_write_leaves_the_fact_to_the_next(
    store: ObjectStore, engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    event = at(order_placed(str(new_id())), LATE)
    # An attempt recorded where the fact would go, then died before writing the object.
    await written.record(engine, {event.event_id: "order_facts/dt=2026-11-30/never.jsonl"})

    outcome = await process(analytics_consumer(store), event, unit_of_work)

    assert outcome is Outcome.HANDLED
    facts = lines_by_day(list_partitions(store))
    assert [f["fact_id"] for f in facts["dt=2026-11-30"]] == [event.event_id]
    assert await still_recorded(engine, [event]) == 0


async def test_objects_are_named_by_their_facts_and_never_rewritten(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "analytics")
    ids = sorted(str(new_id()) for _ in range(2))
    facts = [(fact_id, LATE, {"event": "OrderPlaced"}) for fact_id in ids]

    first = await PartitionedFactSink(store).append_many(facts)
    other_process = await PartitionedFactSink(store).append_many(facts[::-1])

    assert (first, other_process) == (2, 0)
    keys = await store.keys()
    assert len(keys) == 1
    assert keys[0].startswith("order_facts/dt=2026-11-30/")
    assert await read_facts(store) == {
        "2026-11-30": [{"fact_id": i, "event": "OrderPlaced"} for i in ids]
    }
