"""A database that is only busy makes a call UNAVAILABLE (retried by callers with backoff), not
INTERNAL: a statement that hits the statement timeout behind a held row lock, and a pool whose
every connection is taken. Real inventory server, real PostgreSQL, a real competing
transaction."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.common.v1 import ids_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from tests.support.database import MakeEngine
from tests.support.servers import ServiceServers

WITHIN = 20.0


def reserve(sku: str) -> pb.ReserveStockRequest:
    order_id = str(uuid.uuid4())
    return pb.ReserveStockRequest(
        idempotency_key=f"reserve-{order_id}",
        order_id=ids_pb2.OrderId(value=order_id),
        lines=[pb.ReservationLine(sku=ids_pb2.Sku(value=sku), quantity=1)],
        ttl=duration_pb2.Duration(seconds=900),
    )


async def first_code(port: int, request: pb.ReserveStockRequest) -> grpc.StatusCode:
    """The status of one call, on a channel that does not retry."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await pb_grpc.InventoryServiceStub(channel).ReserveStock(request, timeout=WITHIN)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
async def servers(engine: AsyncEngine) -> AsyncIterator[ServiceServers]:
    async with AsyncExitStack() as stack:
        yield ServiceServers(stack, engine)


async def stocked(port: int) -> str:
    sku = f"B{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await pb_grpc.InventoryServiceStub(channel).SetStock(
            pb.SetStockRequest(idempotency_key=f"set-{sku}", sku=ids_pb2.Sku(value=sku), on_hand=5),
            timeout=WITHIN,
        )
    return sku


async def test_a_statement_timed_out_behind_a_row_lock_is_unavailable(
    make_engine: MakeEngine, servers: ServiceServers
) -> None:
    engine = make_engine(db_statement_timeout_ms=300)
    server = await servers.inventory(engine=engine)
    sku = await stocked(server.port)
    holder = make_engine()
    async with holder.begin() as transaction:
        await transaction.execute(
            sa.text("SELECT 1 FROM inventory.stock_items WHERE sku = :sku FOR UPDATE"),
            {"sku": sku},
        )
        assert await first_code(server.port, reserve(sku)) is grpc.StatusCode.UNAVAILABLE
    assert await first_code(server.port, reserve(sku)) is grpc.StatusCode.OK


async def test_a_pool_with_no_connection_free_in_time_is_unavailable(
    make_engine: MakeEngine, servers: ServiceServers
) -> None:
    engine = make_engine(db_pool_size=1, default_call_timeout_seconds=0.3)
    server = await servers.inventory(engine=engine)
    sku = await stocked(server.port)
    release = asyncio.Event()

    async def hold() -> None:
        async with engine.connect():
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(2)]  # pool of 1 + overflow of 1
    try:
        await asyncio.sleep(0.1)
        assert await first_code(server.port, reserve(sku)) is grpc.StatusCode.UNAVAILABLE
    finally:
        release.set()
        await asyncio.gather(*holders)
    assert await first_code(server.port, reserve(sku)) is grpc.StatusCode.OK
