"""The shared gRPC machinery on a real grpc.aio server (port 0) over a real database:
field rules enforced before any handler, domain errors with details, health, reflection."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.common.v1 import ids_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from marketplace_platform import errors
from marketplace_platform.channels import open_channel
from marketplace_platform.grpc_errors import from_rpc_error
from marketplace_platform.grpc_server import RunningServer
from services.inventory import bootstrap as inventory
from services.inventory.adapters.tables import outbox, stock_items, stock_movements
from tests.support.database import table_counts
from tests.support.grpc_probes import SERVING, health_status, listed_services
from tests.support.keys import unique

pytestmark = pytest.mark.engine(service_name="inventory")


@pytest.fixture
async def channel(inventory_server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    channel = open_channel(
        f"127.0.0.1:{inventory_server.port}",
        default_timeout=5,
        idempotent_services=[inventory.SERVICE_NAME],
    )
    yield channel
    await channel.close()


def fresh_sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:12]}"


async def count_rows(engine: AsyncEngine) -> dict[str, int]:
    return await table_counts(engine, stock_items, stock_movements, outbox)


async def test_a_valid_request_reaches_the_handler_and_writes(
    channel: grpc.aio.Channel, engine: AsyncEngine
) -> None:
    sku = fresh_sku()
    stub = pb_grpc.InventoryServiceStub(channel)
    request = pb.SetStockRequest(
        idempotency_key=f"key-{sku}", sku=ids_pb2.Sku(value=sku), on_hand=50
    )

    response = await stub.SetStock(request)
    again = await stub.GetStock(pb.GetStockRequest(sku=ids_pb2.Sku(value=sku)))

    assert (response.stock_level.on_hand, response.stock_level.available) == (50, 50)
    assert again.stock_level.on_hand == 50
    async with engine.connect() as connection:
        ledger = (
            (
                await connection.execute(
                    select(stock_movements.c.on_hand_delta).where(stock_movements.c.sku == sku)
                )
            )
            .scalars()
            .all()
        )
    assert ledger == [50]


async def test_broken_field_rules_are_refused_with_the_fields_and_write_nothing(
    channel: grpc.aio.Channel, engine: AsyncEngine
) -> None:
    stub = pb_grpc.InventoryServiceStub(channel)
    before = await count_rows(engine)
    request = pb.SetStockRequest(idempotency_key="short", sku=ids_pb2.Sku(value="-bad"), on_hand=-1)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SetStock(request)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    fields = {v.field: v.reason for v in bad_request.field_violations}
    assert fields == {
        "idempotency_key": "string.min_len",
        "sku.value": "string.pattern",
        "on_hand": "int64.gte_lte",
    }
    assert await count_rows(engine) == before


async def test_a_request_missing_required_messages_names_each_one(
    channel: grpc.aio.Channel,
) -> None:
    stub = pb_grpc.InventoryServiceStub(channel)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReserveStock(pb.ReserveStockRequest(idempotency_key="order-key-1"))

    error = from_rpc_error(caught.value)
    assert isinstance(error, errors.InvalidArgument)
    assert {v.field for v in error.violations} == {"order_id", "lines", "ttl"}


async def test_domain_errors_map_to_status_codes_with_their_reason(
    channel: grpc.aio.Channel,
) -> None:
    stub = pb_grpc.InventoryServiceStub(channel)
    sku = fresh_sku()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetStock(pb.GetStockRequest(sku=ids_pb2.Sku(value=sku)))

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    error = from_rpc_error(caught.value)
    assert isinstance(error, errors.NotFound)
    assert error.metadata == {"sku": sku}


async def test_the_request_id_comes_back_and_is_kept_when_given(
    channel: grpc.aio.Channel,
) -> None:
    stub = pb_grpc.InventoryServiceStub(channel)
    call = stub.SetStock(
        pb.SetStockRequest(
            idempotency_key=unique("rid-key-"), sku=ids_pb2.Sku(value=fresh_sku()), on_hand=1
        ),
        metadata=(("x-request-id", "req-from-caller"),),
    )
    await call
    assert dict(await call.initial_metadata())["x-request-id"] == "req-from-caller"


async def test_health_is_serving_while_the_database_answers(
    inventory_server: RunningServer,
) -> None:
    for service in ("", inventory.SERVICE_NAME):
        assert await health_status(f"127.0.0.1:{inventory_server.port}", service) == SERVING


async def test_reflection_lists_the_service(inventory_server: RunningServer) -> None:
    names = await listed_services(f"127.0.0.1:{inventory_server.port}")
    assert {inventory.SERVICE_NAME, "grpc.health.v1.Health"} <= names
