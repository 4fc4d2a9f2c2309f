"""Order reads from a reader endpoint (READER_DATABASE_URL) on real PostgreSQL: GetOrder answers
from the reader when it has the order, even a stale copy (that is the point of a reader: the
writer is not asked); an order the reader does not have yet, like the customer's own just
placed, is read from the writer; GetOrder with a wait reads the writer, which the settlement
notification comes from. The reader is a second database holding only what was copied to it,
as a lagging replica holds only what it has replayed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from marketplace.checkout.v1 import checkout_service_pb2 as pb
from marketplace.checkout.v1 import checkout_service_pb2_grpc as pb_grpc
from marketplace.common.v1 import ids_pb2
from marketplace_platform.channels import open_channel
from marketplace_platform.settings import to_asyncpg_url
from services.checkout import bootstrap as checkout
from services.checkout.adapters import tables
from tests.conftest import fresh_database, migrate
from tests.support.checkout import FakePayments, NoSaga, OneLineCarts, place_request
from tests.support.keys import customer_id as new_customer
from tests.support.keys import idempotency_key as new_key
from tests.support.servers import ServiceServers

if TYPE_CHECKING:
    from marketplace.checkout.v1.checkout_service_pb2_grpc import (
        CheckoutServiceAsyncStub as Stub,
    )


@pytest.fixture(scope="module")
async def reader_url(postgres_server_url: str) -> AsyncIterator[str]:
    async with fresh_database(postgres_server_url) as url:
        await migrate(url)
        yield url


@pytest.fixture(scope="module")
async def reader(reader_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(to_asyncpg_url(reader_url))
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def stub(
    grpc_servers: ServiceServers, migrated_database_url: str, reader_url: str
) -> AsyncIterator[Stub]:
    settings = checkout.CheckoutSettings(
        grpc_port=0, database_url=migrated_database_url, reader_database_url=reader_url
    )
    factory = checkout.build(settings, carts=OneLineCarts(), payments=FakePayments(), saga=NoSaga())
    server = await grpc_servers.start(settings, factory)
    channel = open_channel(f"127.0.0.1:{server.port}", default_timeout=30)
    yield pb_grpc.CheckoutServiceStub(channel)
    await channel.close()


async def replicate(writer: AsyncEngine, reader: AsyncEngine, order_id: str) -> None:
    """Copy the order's rows to the reader, as replication would have by now."""
    async with writer.connect() as source, reader.begin() as target:
        for table in (tables.orders, tables.order_lines):
            rows = await source.execute(
                sa.select(table).where(table.c.order_id == uuid.UUID(order_id))
            )
            for row in rows.mappings():
                await target.execute(sa.insert(table).values(dict(row)))


async def status_in(engine: AsyncEngine, order_id: str) -> str:
    async with engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT status FROM checkout.orders WHERE order_id = :id"), {"id": order_id}
        )
    return str(found)


async def place(stub: Stub, customer: str) -> str:
    placed = await stub.PlaceOrder(place_request(customer, uuid.uuid4(), new_key()))
    return placed.order_id.value


def get(order_id: str, customer: str, wait_seconds: int = 0) -> pb.GetOrderRequest:
    request = pb.GetOrderRequest(
        order_id=ids_pb2.OrderId(value=order_id), customer_id=ids_pb2.CustomerId(value=customer)
    )
    if wait_seconds:
        request.wait.CopyFrom(duration_pb2.Duration(seconds=wait_seconds))
    return request


async def test_a_just_placed_order_the_reader_has_not_got_is_read_from_the_writer(
    stub: Stub, reader: AsyncEngine
) -> None:
    customer = new_customer()
    order_id = await place(stub, customer)
    assert await status_in(reader, order_id) == "None"  # not replicated yet

    order = (await stub.GetOrder(get(order_id, customer))).order

    assert (order.order_id.value, order.status) == (order_id, pb.ORDER_STATUS_PENDING)


async def test_an_order_the_reader_has_is_answered_from_it_even_when_the_writer_moved_on(
    stub: Stub, engine: AsyncEngine, reader: AsyncEngine
) -> None:
    customer = new_customer()
    order_id = await place(stub, customer)
    await replicate(engine, reader, order_id)
    async with engine.begin() as connection:  # the writer moves on; the reader lags behind
        await connection.execute(
            text("UPDATE checkout.orders SET status = 'CANCELLED' WHERE order_id = :id"),
            {"id": order_id},
        )

    read = (await stub.GetOrder(get(order_id, customer))).order
    waited = (await stub.GetOrder(get(order_id, customer, wait_seconds=5))).order

    assert read.status == pb.ORDER_STATUS_PENDING  # the reader's copy: the writer was not asked
    assert waited.status == pb.ORDER_STATUS_CANCELLED  # a wait reads the writer


async def test_another_customers_order_is_not_found_on_the_reader_or_the_writer(
    stub: Stub, engine: AsyncEngine, reader: AsyncEngine
) -> None:
    order_id = await place(stub, new_customer())
    await replicate(engine, reader, order_id)

    with pytest.raises(Exception, match="NOT_FOUND"):
        await stub.GetOrder(get(order_id, new_customer()))
