"""Inventory reservations over real gRPC and a real PostgreSQL: no oversell under real races,
idempotency by order, commit/release rules, expiry, bad input, the ledger audit."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import duration_pb2
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.common.v1 import ids_pb2
from marketplace.events.v1 import envelope_pb2, inventory_events_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from marketplace_platform import errors
from marketplace_platform.channels import balanced_channel, open_channel
from marketplace_platform.db import unit_of_work_factory
from marketplace_platform.grpc_errors import from_rpc_error
from marketplace_platform.grpc_server import RunningServer
from marketplace_platform.ids import new_id
from marketplace_platform.outbox import OutboxWriter
from services.inventory import bootstrap as inventory
from services.inventory.adapters import tables
from services.inventory.adapters.unit_of_work import InventoryUnitOfWork
from services.inventory.service_layer.deps import InventoryDeps
from services.inventory.service_layer.reservations import expire_reservations
from tests.support.database import table_counts
from tests.support.refusals import refusal

if TYPE_CHECKING:
    from marketplace.inventory.v1.inventory_service_pb2_grpc import (
        InventoryServiceAsyncStub as Stub,
    )

RACERS = 200
WITHIN = 60.0


pytestmark = pytest.mark.engine(db_pool_size=20)


@pytest.fixture
async def stub(inventory_server: RunningServer) -> AsyncIterator[Stub]:
    channel = open_channel(f"127.0.0.1:{inventory_server.port}", default_timeout=15)
    yield pb_grpc.InventoryServiceStub(channel)
    await channel.close()


def sku(name: str) -> ids_pb2.Sku:
    return ids_pb2.Sku(value=name)


def fresh_skus(count: int) -> list[str]:
    prefix = uuid.uuid4().hex[:8]
    return [f"R{prefix}-{index}" for index in range(count)]


def reserve_request(
    order_id: str, lines: Sequence[tuple[str, int]], ttl_seconds: int = 900
) -> pb.ReserveStockRequest:
    return pb.ReserveStockRequest(
        idempotency_key=f"reserve-{order_id}",
        order_id=ids_pb2.OrderId(value=order_id),
        lines=[pb.ReservationLine(sku=sku(s), quantity=q) for s, q in lines],
        ttl=duration_pb2.Duration(seconds=ttl_seconds),
    )


async def stock(stub: Stub, name: str) -> pb.StockLevel:
    return (await stub.GetStock(pb.GetStockRequest(sku=sku(name)))).stock_level


async def set_stock(stub: Stub, name: str, units: int) -> None:
    await stub.SetStock(
        pb.SetStockRequest(idempotency_key=f"set-{name}-{units}", sku=sku(name), on_hand=units)
    )


async def audit(stub: Stub, names: Sequence[str]) -> pb.AuditStockResponse:
    return await stub.AuditStock(pb.AuditStockRequest(skus=[sku(n) for n in names]))


async def reserve_on_own_connection(server: RunningServer, request: pb.ReserveStockRequest) -> str:
    """One racer: its own gRPC connection, one reservation; the outcome's reason. Like every
    caller of ours it retries UNAVAILABLE (a database only busy in the burst) with backoff."""
    channel = balanced_channel(
        f"127.0.0.1:{server.port}",
        idempotent_services=[pb.DESCRIPTOR.services_by_name["InventoryService"].full_name],
        options=[("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 1)],
    )
    try:
        await pb_grpc.InventoryServiceStub(channel).ReserveStock(request, timeout=WITHIN)
        return "RESERVED"
    except grpc.aio.AioRpcError as error:
        domain_error = from_rpc_error(error)
        return domain_error.reason if domain_error else error.code().name
    finally:
        await channel.close()


async def test_200_racers_for_50_units_reserve_exactly_50(
    inventory_server: RunningServer, stub: Stub
) -> None:
    [hot] = fresh_skus(1)
    await set_stock(stub, hot, 50)
    requests = [reserve_request(str(new_id()), [(hot, 1)]) for _ in range(RACERS)]

    outcomes = Counter(
        await asyncio.gather(*(reserve_on_own_connection(inventory_server, r) for r in requests))
    )

    assert outcomes == {"RESERVED": 50, "OUT_OF_STOCK": RACERS - 50}
    level = await stock(stub, hot)
    assert (level.on_hand, level.reserved, level.available) == (50, 50, 0)
    assert list((await audit(stub, [hot])).discrepancies) == []


async def test_overlapping_multi_line_orders_neither_deadlock_nor_oversell(
    inventory_server: RunningServer, stub: Stub
) -> None:
    names = fresh_skus(5)
    for name in names:
        await set_stock(stub, name, 40)
    rng = random.Random(7)
    orders = []
    for _ in range(150):
        chosen = rng.sample(names, rng.randint(2, 4))  # random order: locks must not follow it
        orders.append((str(new_id()), [(name, rng.randint(1, 3)) for name in chosen]))

    outcomes = await asyncio.gather(
        *(
            reserve_on_own_connection(inventory_server, reserve_request(o, lines))
            for o, lines in orders
        )
    )

    assert set(outcomes) <= {"RESERVED", "OUT_OF_STOCK"}, Counter(outcomes)
    assert outcomes.count("RESERVED") > 0
    expected = Counter[str]()
    for (_, lines), outcome in zip(orders, outcomes, strict=True):
        if outcome == "RESERVED":
            expected.update(dict(lines))
    for name in names:
        level = await stock(stub, name)
        assert level.reserved == expected[name]
        assert level.available >= 0
    assert list((await audit(stub, names)).discrepancies) == []


async def test_the_same_request_again_returns_the_same_reservation(
    stub: Stub,
) -> None:
    a, b = fresh_skus(2)
    await set_stock(stub, a, 10)
    await set_stock(stub, b, 10)
    order = str(new_id())

    first = await stub.ReserveStock(reserve_request(order, [(a, 2), (b, 3)]))
    again = await stub.ReserveStock(reserve_request(order, [(b, 3), (a, 2)]))
    racing = await asyncio.gather(
        *(stub.ReserveStock(reserve_request(order, [(a, 2), (b, 3)])) for _ in range(10))
    )

    ids = {r.reservation.reservation_id.value for r in [first, again, *racing]}
    assert ids == {first.reservation.reservation_id.value}
    assert ((await stock(stub, a)).reserved, (await stock(stub, b)).reserved) == (2, 3)


async def test_a_different_request_for_the_same_order_is_refused(
    stub: Stub,
) -> None:
    [a] = fresh_skus(1)
    await set_stock(stub, a, 10)
    order = str(new_id())
    await stub.ReserveStock(reserve_request(order, [(a, 2)]))

    error = await refusal(stub.ReserveStock(reserve_request(order, [(a, 3)])))

    assert error.reason == "RESERVATION_MISMATCH"
    assert (await stock(stub, a)).reserved == 2


async def test_commit_sells_and_repeats_safely_and_a_release_after_it_restocks_once(
    stub: Stub,
) -> None:
    [a] = fresh_skus(1)
    await set_stock(stub, a, 10)
    order = ids_pb2.OrderId(value=str(new_id()))
    await stub.ReserveStock(reserve_request(order.value, [(a, 4)]))
    commit = pb.CommitReservationRequest(idempotency_key="commit-key-1", order_id=order)

    first = await stub.CommitReservation(commit)
    again = await stub.CommitReservation(commit)
    sold = await stock(stub, a)
    release = pb.ReleaseReservationRequest(
        idempotency_key="release-key-1", order_id=order, reason=pb.RELEASE_REASON_CUSTOMER_CANCELLED
    )
    # A cancelled order's sold units come back exactly once, however many releases race.
    returned = await asyncio.gather(*(stub.ReleaseReservation(release) for _ in range(20)))
    recommit = await refusal(stub.CommitReservation(commit))

    assert first.reservation.status == again.reservation.status == pb.RESERVATION_STATUS_COMMITTED
    assert (sold.on_hand, sold.reserved, sold.sold, sold.available) == (6, 0, 4, 6)
    assert {r.reservation.status for r in returned} == {pb.RESERVATION_STATUS_RETURNED}
    level = await stock(stub, a)
    assert (level.on_hand, level.reserved, level.sold, level.available) == (10, 0, 0, 10)
    assert recommit.reason == "RESERVATION_CLOSED"
    assert list((await audit(stub, [a])).discrepancies) == []


async def test_a_commit_and_a_release_racing_end_with_the_units_back_once(stub: Stub) -> None:
    skus = fresh_skus(1)
    await set_stock(stub, skus[0], 100)
    orders = [ids_pb2.OrderId(value=str(new_id())) for _ in range(30)]
    for order in orders:
        await stub.ReserveStock(reserve_request(order.value, [(skus[0], 2)]))

    async def commit(order: ids_pb2.OrderId) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):  # refused when the release won
            await stub.CommitReservation(
                pb.CommitReservationRequest(idempotency_key=f"c-{order.value}", order_id=order)
            )

    async def release(order: ids_pb2.OrderId) -> None:
        await stub.ReleaseReservation(
            pb.ReleaseReservationRequest(
                idempotency_key=f"r-{order.value}",
                order_id=order,
                reason=pb.RELEASE_REASON_CUSTOMER_CANCELLED,
            )
        )

    await asyncio.gather(*(step(order) for order in orders for step in (commit, release)))

    level = await stock(stub, skus[0])
    assert (level.on_hand, level.reserved, level.sold, level.available) == (100, 0, 0, 100)
    assert list((await audit(stub, skus)).discrepancies) == []


async def test_release_gives_units_back_repeats_safely_and_blocks_a_later_commit(
    stub: Stub,
) -> None:
    [a] = fresh_skus(1)
    await set_stock(stub, a, 10)
    order = ids_pb2.OrderId(value=str(new_id()))
    await stub.ReserveStock(reserve_request(order.value, [(a, 4)]))
    release = pb.ReleaseReservationRequest(
        idempotency_key="release-key-2", order_id=order, reason=pb.RELEASE_REASON_PAYMENT_DECLINED
    )

    first = await stub.ReleaseReservation(release)
    again = await stub.ReleaseReservation(release)
    error = await refusal(
        stub.CommitReservation(
            pb.CommitReservationRequest(idempotency_key="commit-key-2", order_id=order)
        )
    )

    assert first.reservation.status == again.reservation.status == pb.RESERVATION_STATUS_RELEASED
    assert first.reservation.release_reason == pb.RELEASE_REASON_PAYMENT_DECLINED
    assert (await stock(stub, a)).available == 10
    assert error.reason == "RESERVATION_CLOSED"
    assert list((await audit(stub, [a])).discrepancies) == []


async def test_a_release_before_the_reservation_makes_a_late_reservation_fail(
    stub: Stub,
) -> None:
    [a] = fresh_skus(1)
    await set_stock(stub, a, 10)
    order = ids_pb2.OrderId(value=str(new_id()))

    await stub.ReleaseReservation(
        pb.ReleaseReservationRequest(
            idempotency_key="release-key-3", order_id=order, reason=pb.RELEASE_REASON_TIMEOUT
        )
    )
    error = await refusal(stub.ReserveStock(reserve_request(order.value, [(a, 1)])))

    assert error.reason == "RESERVATION_CLOSED"
    assert (await stock(stub, a)).available == 10


async def test_the_sweeper_releases_expired_reservations_and_commit_is_then_refused(
    stub: Stub, engine: AsyncEngine
) -> None:
    [a] = fresh_skus(1)
    await set_stock(stub, a, 5)
    order = ids_pb2.OrderId(value=str(new_id()))
    await stub.ReserveStock(reserve_request(order.value, [(a, 5)], ttl_seconds=1))
    assert (await stock(stub, a)).available == 0
    deps = InventoryDeps(
        unit_of_work_factory(
            engine, OutboxWriter(tables.outbox, producer="inventory"), kind=InventoryUnitOfWork
        )
    )

    # As of a moment past the one-second TTL, rather than sleeping until then.
    expired = await expire_reservations(deps, as_of=datetime.now(UTC) + timedelta(seconds=5))

    assert str(order.value) in {str(r.order_id) for r in expired}
    assert (await stock(stub, a)).available == 5
    found = await stub.GetReservation(pb.GetReservationRequest(order_id=order))
    assert found.reservation.status == pb.RESERVATION_STATUS_EXPIRED
    error = await refusal(
        stub.CommitReservation(
            pb.CommitReservationRequest(idempotency_key="commit-key-3", order_id=order)
        )
    )
    assert error.reason == "RESERVATION_CLOSED"
    async with engine.connect() as connection:
        raw = (
            await connection.execute(
                select(tables.outbox.c.envelope)
                .where(tables.outbox.c.aggregate_id == order.value)
                .where(tables.outbox.c.event_type == "marketplace.events.v1.InventoryReleased")
            )
        ).scalar_one()
    released = inventory_events_pb2.InventoryReleased()
    assert envelope_pb2.EventEnvelope.FromString(raw).payload.Unpack(released)
    assert released.reason == pb.RELEASE_REASON_EXPIRED
    assert list((await audit(stub, [a])).discrepancies) == []


async def test_a_commit_past_the_expiry_is_refused_even_before_the_sweeper_runs(
    stub: Stub, engine: AsyncEngine
) -> None:
    [a] = fresh_skus(1)
    await set_stock(stub, a, 5)
    order = ids_pb2.OrderId(value=str(new_id()))
    await stub.ReserveStock(reserve_request(order.value, [(a, 1)], ttl_seconds=1))
    async with engine.begin() as connection:  # time passes: move the expiry into the past
        await connection.execute(
            tables.reservations.update()
            .where(tables.reservations.c.order_id == uuid.UUID(order.value))
            .values(expires_at=func.now() - timedelta(seconds=1))
        )

    error = await refusal(
        stub.CommitReservation(
            pb.CommitReservationRequest(idempotency_key="commit-key-4", order_id=order)
        )
    )

    assert error.reason == "RESERVATION_CLOSED"
    assert error.metadata["status"] == "EXPIRED"


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    return await table_counts(
        engine, tables.reservations, tables.reservation_lines, tables.stock_movements, tables.outbox
    )


@pytest.mark.parametrize(
    ("case", "make_lines", "ttl_seconds", "bad_field"),
    [
        ("zero quantity", lambda a, b: [(a, 0)], 900, "lines[0].quantity"),
        ("negative quantity", lambda a, b: [(a, -2)], 900, "lines[0].quantity"),
        ("no lines", lambda a, b: [], 900, "lines"),
        ("duplicate skus", lambda a, b: [(a, 1), (a, 2)], 900, "lines"),
        ("unknown sku", lambda a, b: [(a, 1), ("NO-SUCH-SKU-42", 1)], 900, "lines[1].sku"),
        ("ttl of zero", lambda a, b: [(a, 1)], 0, "ttl"),
        ("ttl of a year", lambda a, b: [(a, 1)], 365 * 86400, "ttl"),
    ],
)
async def test_bad_input_is_refused_with_the_field_and_writes_nothing(
    stub: Stub,
    engine: AsyncEngine,
    case: str,
    make_lines: object,
    ttl_seconds: int,
    bad_field: str,
) -> None:
    a, b = fresh_skus(2)
    await set_stock(stub, a, 10)
    before = await row_counts(engine)
    lines = make_lines(a, b)  # type: ignore[operator]

    error = await refusal(stub.ReserveStock(reserve_request(str(new_id()), lines, ttl_seconds)))

    assert isinstance(error, errors.InvalidArgument), case
    assert bad_field in {v.field for v in error.violations}, error.violations
    assert await row_counts(engine) == before
    assert (await stock(stub, a)).reserved == 0


async def test_a_reservation_writes_its_event_in_the_same_transaction(
    stub: Stub, engine: AsyncEngine
) -> None:
    [a] = fresh_skus(1)
    await set_stock(stub, a, 3)
    order = str(new_id())

    response = await stub.ReserveStock(reserve_request(order, [(a, 3)]))

    async with engine.connect() as connection:
        raw = (
            await connection.execute(
                select(tables.outbox.c.envelope).where(tables.outbox.c.aggregate_id == order)
            )
        ).scalar_one()
    event = inventory_events_pb2.InventoryReserved()
    assert envelope_pb2.EventEnvelope.FromString(raw).payload.Unpack(event)
    assert event.reservation_id == response.reservation.reservation_id
    assert [(line.sku.value, line.quantity) for line in event.lines] == [(a, 3)]


async def test_the_audit_reports_counts_the_ledger_does_not_explain(
    stub: Stub, engine: AsyncEngine
) -> None:
    [a] = fresh_skus(1)
    await set_stock(stub, a, 10)
    async with engine.begin() as connection:  # a change that bypassed the ledger
        await connection.execute(
            text("UPDATE inventory.stock_items SET on_hand = 12 WHERE sku = :sku"), {"sku": a}
        )

    report = await audit(stub, [a])

    assert [d.sku.value for d in report.discrepancies] == [a]
    assert "on_hand 12 but the ledger says 10" in report.discrepancies[0].description


async def test_the_service_sweeper_releases_a_reservation_once_its_ttl_passes(
    stub: Stub, engine: AsyncEngine
) -> None:
    settings = inventory.InventorySettings(reservation_sweep_interval_seconds=0.2)
    [sweeper] = inventory.build(settings)(engine).background
    [a] = fresh_skus(1)
    await set_stock(stub, a, 2)
    order = ids_pb2.OrderId(value=str(new_id()))
    await stub.ReserveStock(reserve_request(order.value, [(a, 2)], ttl_seconds=1))
    sweeping = asyncio.create_task(sweeper())
    try:
        async with asyncio.timeout(WITHIN):
            while True:  # polling: the real one-second TTL has to pass
                if (await stock(stub, a)).available == 2:
                    break
                await asyncio.sleep(0.1)
    finally:
        sweeping.cancel()
    found = await stub.GetReservation(pb.GetReservationRequest(order_id=order))
    assert found.reservation.status == pb.RESERVATION_STATUS_EXPIRED
