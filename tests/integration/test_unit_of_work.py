"""The unit of work: state and outbox rows commit together or not at all."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.common.v1 import ids_pb2
from marketplace.events.v1 import envelope_pb2, inventory_events_pb2
from marketplace_platform.db import unit_of_work_factory
from marketplace_platform.ids import new_id
from marketplace_platform.migrations import migrations_dir, upgrade
from marketplace_platform.outbox import OutboxWriter
from services.inventory.adapters.tables import outbox, stock_items
from services.inventory.adapters.unit_of_work import InventoryUnitOfWork
from services.inventory.domain.stock import StockLevel

REPO = Path(__file__).resolve().parents[2]


class Boom(Exception):
    pass


def released_event(order_id: str) -> inventory_events_pb2.InventoryReleased:
    return inventory_events_pb2.InventoryReleased(
        reservation_id=ids_pb2.ReservationId(value=str(new_id())),
        order_id=ids_pb2.OrderId(value=order_id),
    )


async def write_stock_and_event(
    engine: AsyncEngine, sku: str, order_id: str, *, fail: bool
) -> None:
    uow = unit_of_work_factory(
        engine, OutboxWriter(outbox, producer="inventory"), kind=InventoryUnitOfWork
    )()
    async with uow:
        await uow.stock.get_or_create_for_update(sku)
        await uow.stock.save(StockLevel(sku, on_hand=5))
        await uow.publish(released_event(order_id), aggregate_type="order", aggregate_id=order_id)
        if fail:
            raise Boom


async def stored(engine: AsyncEngine, sku: str, order_id: str) -> tuple[int | None, list[bytes]]:
    async with engine.connect() as connection:
        on_hand = (
            await connection.execute(select(stock_items.c.on_hand).where(stock_items.c.sku == sku))
        ).scalar_one_or_none()
        envelopes = (
            (
                await connection.execute(
                    select(outbox.c.envelope).where(outbox.c.aggregate_id == order_id)
                )
            )
            .scalars()
            .all()
        )
    return on_hand, list(envelopes)


async def test_state_and_event_commit_together(engine: AsyncEngine) -> None:
    sku, order_id = f"UOW-{uuid.uuid4().hex[:12]}", str(new_id())

    await write_stock_and_event(engine, sku, order_id, fail=False)

    on_hand, envelopes = await stored(engine, sku, order_id)
    assert on_hand == 5
    envelope = envelope_pb2.EventEnvelope.FromString(envelopes[0])
    payload = inventory_events_pb2.InventoryReleased()
    assert envelope.payload.Unpack(payload)
    assert (envelope.event_type, envelope.producer, payload.order_id.value) == (
        "marketplace.events.v1.InventoryReleased",
        "inventory",
        order_id,
    )


async def test_a_failure_leaves_neither_state_nor_event(engine: AsyncEngine) -> None:
    sku, order_id = f"UOW-{uuid.uuid4().hex[:12]}", str(new_id())

    with pytest.raises(Boom):
        await write_stock_and_event(engine, sku, order_id, fail=True)

    assert await stored(engine, sku, order_id) == (None, [])


async def test_a_malformed_event_fails_the_transaction(engine: AsyncEngine) -> None:
    sku, order_id = f"UOW-{uuid.uuid4().hex[:12]}", "not-a-uuid"

    with pytest.raises(ValueError, match="malformed"):
        await write_stock_and_event(engine, sku, order_id, fail=False)

    assert await stored(engine, sku, order_id) == (None, [])


async def test_the_events_of_a_transaction_are_one_insert_at_its_end_in_publish_order(
    engine: AsyncEngine,
) -> None:
    sku, order_id = f"UOW-{uuid.uuid4().hex[:12]}", str(new_id())
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    uow = unit_of_work_factory(
        engine, OutboxWriter(outbox, producer="inventory"), kind=InventoryUnitOfWork
    )()
    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with uow:
            published = [
                await uow.publish(
                    released_event(order_id), aggregate_type="order", aggregate_id=order_id
                )
                for _ in range(3)
            ]
            await uow.stock.get_or_create_for_update(sku)  # a change after the events
            before_the_end = len(statements)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)

    inserts = [s for s in statements if "INSERT INTO inventory.outbox" in s]
    assert len(inserts) == 1
    assert statements.index(inserts[0]) >= before_the_end  # written at the end
    assert "pg_notify" in inserts[0]  # the transaction's first: it carries the relay's wakeup
    async with engine.connect() as connection:
        ids = await connection.execute(
            select(outbox.c.event_id).where(outbox.c.aggregate_id == order_id).order_by(outbox.c.id)
        )
        assert [str(event_id) for event_id in ids.scalars()] == [e.event_id for e in published]


async def test_migrations_started_at_once_by_several_processes_all_succeed(
    database_url: str,
) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    migrators = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "marketplace_platform.migrate", env=env, cwd=REPO
        )
        for _ in range(3)
    ]
    async with asyncio.timeout(60):
        assert [await m.wait() for m in migrators] == [0, 0, 0]
    # and in one process, from several threads
    location = migrations_dir("services.inventory")
    await asyncio.gather(*(asyncio.to_thread(upgrade, database_url, location) for _ in range(3)))
