"""GetOrder's `wait` on a real checkout server and a real PostgreSQL: a waiter is answered as soon
as the order leaves PENDING (the orders table's trigger NOTIFYs, the server's one LISTEN wakes
the order's waiters), PENDING after the wait when nothing settles it, inside the caller's
deadline, and one settlement releases all 256 waiters of the order at a cost of one read each
before and after the wait, none while waiting (and next to no CPU: one run, 6 ms in the
second they were parked, client and server together). A lost LISTEN wakes the waiters, which read
again and still see the settlement; a server shutting down answers its waiters at once. The
saga is driven by hand through its FailOrder step."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import duration_pb2
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.checkout.v1 import checkout_service_pb2 as pb
from marketplace.checkout.v1 import checkout_service_pb2_grpc as pb_grpc
from marketplace.common.v1 import ids_pb2
from marketplace_platform.channels import open_channel
from services.checkout import bootstrap as checkout
from services.checkout.adapters.settlements import SETTLED_CHANNEL
from tests.support.checkout import FakePayments, NoSaga, OneLineCarts, place_request
from tests.support.keys import customer_id as new_customer
from tests.support.keys import idempotency_key as new_key
from tests.support.polling import eventually
from tests.support.servers import ServiceServers, serving

if TYPE_CHECKING:
    from marketplace.checkout.v1.checkout_service_pb2_grpc import (
        CheckoutServiceAsyncStub as Stub,
    )

WAITERS = 256  # the gateway's default limit of requests in flight
# CPU seconds (client and server, this process) 256 parked waiters may take in a second.
PARKED_CPU_PER_SECOND = 0.2
LISTEN_NAME = f"listen:{SETTLED_CHANNEL}"
# Well under any wait the tests ask for: an answer this soon came from the NOTIFY.
PROMPTLY = 3.0

# Few connections: the waiters queue for them, and the database server is shared.
pytestmark = pytest.mark.engine(db_pool_size=4)


@dataclass
class Statements:
    """SQL statements the server's engine ran, by text."""

    seen: list[str] = field(default_factory=list)

    def reading_orders(self) -> int:
        return sum("FROM checkout.orders" in sql and "UPDATE" not in sql for sql in self.seen)


@dataclass
class Rig:
    stub: Stub
    engine: AsyncEngine


def checkout_settings(database_url: str) -> checkout.CheckoutSettings:
    # The LISTEN must be on the database the orders are in; the housekeeping loops stay idle.
    return checkout.CheckoutSettings(
        grpc_port=0,
        database_url=database_url,
        completer_interval_seconds=3_600,
        timeout_sweep_interval_seconds=3_600,
        key_reap_interval_seconds=3_600,
    )


def checkout_factory(settings: checkout.CheckoutSettings) -> Any:
    return checkout.build(settings, carts=OneLineCarts(), payments=FakePayments(), saga=NoSaga())


@pytest.fixture(scope="module")
async def rig(
    engine: AsyncEngine, grpc_servers: ServiceServers, migrated_database_url: str
) -> AsyncIterator[Rig]:
    settings = checkout_settings(migrated_database_url)
    server = await grpc_servers.start(settings, checkout_factory(settings), background=True)
    channel = open_channel(f"127.0.0.1:{server.port}", default_timeout=30)
    await eventually(lambda: listeners(engine), what="the server LISTENs", within=20)
    yield Rig(pb_grpc.CheckoutServiceStub(channel), engine)
    await channel.close()


async def listeners(engine: AsyncEngine) -> list[int]:
    """The backends LISTENing for settlements on this database."""
    async with engine.connect() as connection:
        found = await connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": LISTEN_NAME},
        )
        return [int(pid) for pid in found.scalars()]


@contextmanager
def counted(engine: AsyncEngine) -> Iterator[Statements]:
    """Every statement `engine` runs inside the block."""
    statements = Statements()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def placed_order(rig: Rig) -> tuple[str, str]:
    """A new PENDING order and its customer."""
    customer = new_customer()
    response = await rig.stub.PlaceOrder(place_request(customer, uuid.uuid4(), new_key()))
    assert response.status == pb.ORDER_STATUS_PENDING
    return response.order_id.value, customer


def get_order(order_id: str, customer: str, wait: float | None) -> pb.GetOrderRequest:
    request = pb.GetOrderRequest(
        order_id=ids_pb2.OrderId(value=order_id), customer_id=ids_pb2.CustomerId(value=customer)
    )
    if wait is not None:
        request.wait.FromTimedelta(timedelta(seconds=wait))
    return request


async def statements_per_read(rig: Rig, order_id: str, customer: str) -> int:
    """How many statements reading checkout.orders one plain GetOrder runs."""
    with counted(rig.engine) as plain:
        await rig.stub.GetOrder(get_order(order_id, customer, None))
    assert plain.reading_orders() >= 1
    return plain.reading_orders()


async def settle(rig: Rig, order_id: str) -> None:
    """The saga's last compensation step: the order ends CANCELLED."""
    await rig.stub.FailOrder(
        pb.FailOrderRequest(
            idempotency_key=f"{order_id}:fail",
            order_id=ids_pb2.OrderId(value=order_id),
            failure_reason=pb.FAILURE_REASON_PAYMENT_DECLINED,
        )
    )


async def waited(
    rig: Rig, order_id: str, customer: str, wait: float, deadline: float = 30
) -> tuple[pb.Order, float]:
    """The order GetOrder answered with `wait`, and the seconds it took."""
    started = time.monotonic()
    response = await rig.stub.GetOrder(get_order(order_id, customer, wait), timeout=deadline)
    return response.order, time.monotonic() - started


async def test_a_waiting_read_answers_as_soon_as_the_order_settles(rig: Rig) -> None:
    order_id, customer = await placed_order(rig)
    waiter = asyncio.create_task(waited(rig, order_id, customer, wait=10))
    await asyncio.sleep(0.5)
    assert not waiter.done()

    settled_at = time.monotonic()
    await settle(rig, order_id)
    order, _ = await waiter
    assert order.status == pb.ORDER_STATUS_CANCELLED
    assert order.failure_reason == pb.FAILURE_REASON_PAYMENT_DECLINED
    assert time.monotonic() - settled_at < PROMPTLY

    # A settled order is answered at once, whatever the wait.
    order, took = await waited(rig, order_id, customer, wait=10)
    assert (order.status, took < PROMPTLY) == (pb.ORDER_STATUS_CANCELLED, True)


async def test_a_wait_nothing_settles_answers_pending_when_it_is_over_without_reading_meanwhile(
    rig: Rig,
) -> None:
    order_id, customer = await placed_order(rig)
    per_read = await statements_per_read(rig, order_id, customer)

    with counted(rig.engine) as waiting:
        order, took = await waited(rig, order_id, customer, wait=1.5)
    assert order.status == pb.ORDER_STATUS_PENDING
    assert 1.5 <= took < 1.5 + PROMPTLY
    assert waiting.reading_orders() == per_read  # the one read before the wait, no polling


async def test_the_wait_ends_in_time_to_answer_within_the_callers_deadline(rig: Rig) -> None:
    order_id, customer = await placed_order(rig)
    order, took = await waited(rig, order_id, customer, wait=10, deadline=2)
    assert order.status == pb.ORDER_STATUS_PENDING
    assert 1.0 <= took < 2.0


async def test_a_wait_over_ten_seconds_is_refused(rig: Rig) -> None:
    order_id, customer = await placed_order(rig)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await rig.stub.GetOrder(get_order(order_id, customer, 10.5))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    negative = get_order(order_id, customer, None)
    negative.wait.CopyFrom(duration_pb2.Duration(seconds=-1))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await rig.stub.GetOrder(negative)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_one_settlement_releases_every_waiter_of_the_order_and_only_them(rig: Rig) -> None:
    order_id, customer = await placed_order(rig)
    other_id, other_customer = await placed_order(rig)
    per_read = await statements_per_read(rig, order_id, customer)
    with counted(rig.engine) as statements:
        waiters = [
            asyncio.create_task(waited(rig, order_id, customer, wait=10)) for _ in range(WAITERS)
        ]
        bystanders = [
            asyncio.create_task(waited(rig, other_id, other_customer, wait=10)) for _ in range(5)
        ]
        # Every waiter has made its first read and is parked.
        parked = per_read * (WAITERS + 5)
        await eventually(
            lambda: statements.reading_orders() >= parked, what="every waiter read once"
        )
        cpu = time.process_time()
        await asyncio.sleep(1.0)
        parked_cpu = time.process_time() - cpu
        assert not any(task.done() for task in waiters + bystanders)
        assert statements.reading_orders() == parked  # parked waiters do not read
        assert parked_cpu < PARKED_CPU_PER_SECOND, parked_cpu  # nor do they spin

        settled_at = time.monotonic()
        await settle(rig, order_id)
        answered = await asyncio.gather(*waiters)
        released_within = time.monotonic() - settled_at
        assert {order.status for order, _ in answered} == {pb.ORDER_STATUS_CANCELLED}
        assert released_within < PROMPTLY + 2
        assert not any(task.done() for task in bystanders)
        # One read more per released waiter, and FailOrder's own.
        assert statements.reading_orders() - parked <= per_read * (WAITERS + 1)

    await settle(rig, other_id)
    assert {order.status for order, _ in await asyncio.gather(*bystanders)} == {
        pb.ORDER_STATUS_CANCELLED
    }


async def test_a_lost_listen_wakes_the_waiters_and_they_still_see_the_settlement(
    rig: Rig,
) -> None:
    order_id, customer = await placed_order(rig)
    waiter = asyncio.create_task(waited(rig, order_id, customer, wait=10))
    await asyncio.sleep(0.3)
    (before,) = await listeners(rig.engine)
    async with rig.engine.connect() as connection:
        await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": before})
    await eventually(
        lambda: _listening_again(rig.engine, before), what="the LISTEN is back", within=20
    )
    assert not waiter.done()  # woken by the loss, it read PENDING and waits on

    await settle(rig, order_id)
    order, _ = await asyncio.wait_for(waiter, PROMPTLY + 2)
    assert order.status == pb.ORDER_STATUS_CANCELLED


async def _listening_again(engine: AsyncEngine, lost: int) -> bool:
    now = await listeners(engine)
    return bool(now) and lost not in now


async def test_a_server_shutting_down_answers_its_waiters_at_once(
    rig: Rig, engine: AsyncEngine, migrated_database_url: str
) -> None:
    order_id, customer = await placed_order(rig)
    settings = checkout_settings(migrated_database_url)
    async with serving(settings, checkout_factory(settings), engine, background=True) as server:
        channel = open_channel(f"127.0.0.1:{server.port}", default_timeout=30)
        stub: Stub = pb_grpc.CheckoutServiceStub(channel)
        started = time.monotonic()

        async def read() -> pb.GetOrderResponse:
            return await stub.GetOrder(get_order(order_id, customer, 10))

        waiter = asyncio.create_task(read())
        await asyncio.sleep(0.5)
        assert not waiter.done()
    # The block's end stopped the loops (the LISTEN with them), then drained the server.
    order = (await waiter).order
    await channel.close()
    assert order.status == pb.ORDER_STATUS_PENDING
    assert time.monotonic() - started < PROMPTLY
