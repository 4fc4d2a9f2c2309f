"""The saga's adapter handlers against real inventory and payment gRPC servers (real
PostgreSQL, the PSP simulator as a real process): what they return, the named errors they end
with, repeats that are safe, and deadlines that hold when a service is down or silent."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from local_supervisor.embedded import free_port
from marketplace.common.v1 import ids_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as inventory_pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from marketplace_platform.db import create_engine, ping
from marketplace_platform.grpc_server import RunningServer, start_server
from marketplace_platform.ids import new_id
from marketplace_platform.settings import ServiceSettings
from services.inventory import bootstrap as inventory
from services.payment import bootstrap as payment
from tests.support.psp import RunningPsp, running_psp
from workers.saga_adapters import clients, errors
from workers.saga_adapters.registry import HANDLERS

if TYPE_CHECKING:
    from marketplace.inventory.v1.inventory_service_pb2_grpc import (
        InventoryServiceAsyncStub as InventoryStub,
    )

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class InvocationContext:
    """The part of a Lambda context the handlers read: how long the invocation has left."""

    remaining_seconds: float

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_seconds * 1000)


LAMBDA = InvocationContext(remaining_seconds=10)


@pytest.fixture(scope="module")
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(ServiceSettings(database_url=migrated_database_url, db_pool_size=10))
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def psp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningPsp]:
    async with running_psp(tmp_path_factory.mktemp("psp")) as running:
        yield running


@pytest.fixture(scope="module")
async def inventory_server(engine: AsyncEngine) -> AsyncIterator[RunningServer]:
    settings = ServiceSettings(service_name="inventory", grpc_port=0)
    parts = inventory.build(inventory.InventorySettings())(engine)
    running = await start_server(settings, parts.services, lambda: ping(engine))
    yield running
    await running.stop(1)


@pytest.fixture(scope="module")
async def payment_server(engine: AsyncEngine, psp: RunningPsp) -> AsyncIterator[RunningServer]:
    settings = payment.PaymentSettings(
        psp_url=psp.url, psp_timeout_seconds=1.0, psp_breaker_failures=1000, grpc_port=0
    )
    parts = payment.build(settings)(engine)
    running = await start_server(settings, parts.services, lambda: ping(engine))
    yield running
    await running.stop(1)


@pytest.fixture
def targets(
    monkeypatch: pytest.MonkeyPatch,
    inventory_server: RunningServer,
    payment_server: RunningServer,
) -> Iterator[None]:
    """Point the adapters at the test servers, as INVENTORY_TARGET etc. do in a deployment."""
    monkeypatch.setenv("INVENTORY_TARGET", f"127.0.0.1:{inventory_server.port}")
    monkeypatch.setenv("PAYMENT_TARGET", f"127.0.0.1:{payment_server.port}")
    clients.reset()
    yield
    clients.reset()


@pytest.fixture
async def stock(inventory_server: RunningServer) -> AsyncIterator[InventoryStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{inventory_server.port}")
    yield inventory_grpc.InventoryServiceStub(channel)
    await channel.close()


async def run(resource: str, event: dict[str, Any], context: Any = LAMBDA) -> Any:
    """Invoke a handler as the saga engine does: synchronously, on a worker thread."""
    return await asyncio.to_thread(HANDLERS[resource], event, context)


async def stocked_sku(stub: InventoryStub, units: int) -> str:
    name = f"SAGA-{new_id().hex[:12]}"
    await stub.SetStock(
        inventory_pb.SetStockRequest(
            idempotency_key=f"set-{name}", sku=ids_pb2.Sku(value=name), on_hand=units
        )
    )
    return name


async def reserved(stub: InventoryStub, sku: str) -> int:
    response = await stub.GetStock(inventory_pb.GetStockRequest(sku=ids_pb2.Sku(value=sku)))
    return response.stock_level.reserved


def authorize_event(order_id: str, method: str = "pm_card_visa") -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "customer-saga",
        "payment_method": method,
        "amount": {"amount_minor": 2599, "currency": "USD"},
    }


@pytest.mark.usefixtures("targets")
async def test_reserve_holds_every_line_and_a_repeat_returns_the_same_reservation(
    stock: InventoryStub,
) -> None:
    sku = await stocked_sku(stock, 5)
    event = {"order_id": str(new_id()), "lines": [{"sku": sku, "quantity": 2}]}

    first = await run("ReserveInventoryFunctionArn", event)
    again = await run("ReserveInventoryFunctionArn", event)

    assert first == again
    assert first["status"] == "ACTIVE"
    assert await reserved(stock, sku) == 2


@pytest.mark.usefixtures("targets")
async def test_reserve_beyond_the_stock_is_out_of_stock_and_holds_nothing(
    stock: InventoryStub,
) -> None:
    sku = await stocked_sku(stock, 1)
    event = {"order_id": str(new_id()), "lines": [{"sku": sku, "quantity": 2}]}

    with pytest.raises(errors.OutOfStock):
        await run("ReserveInventoryFunctionArn", event)

    assert await reserved(stock, sku) == 0


@pytest.mark.usefixtures("targets")
async def test_authorize_a_good_card_then_void_and_release_repeat_safely(
    stock: InventoryStub, psp: RunningPsp
) -> None:
    order = str(new_id())
    sku = await stocked_sku(stock, 3)
    await run(
        "ReserveInventoryFunctionArn", {"order_id": order, "lines": [{"sku": sku, "quantity": 3}]}
    )

    authorization = await run("AuthorizePaymentFunctionArn", authorize_event(order))
    assert authorization["status"] == "AUTHORIZED"
    assert authorization["authorized"] == {"amount_minor": 2599, "currency": "USD"}
    assert await run("AuthorizePaymentFunctionArn", authorize_event(order)) == authorization

    compensation = {"order_id": order, "reason": "timeout"}
    voids = [await run("VoidPaymentFunctionArn", compensation) for _ in range(2)]
    releases = [await run("ReleaseInventoryFunctionArn", compensation) for _ in range(2)]

    assert voids == [{"status": "VOIDED"}] * 2
    assert releases == [{"status": "RELEASED"}] * 2
    assert [i["status"] for i in await psp.intents(order_id=order)] == ["canceled"]
    assert await reserved(stock, sku) == 0


@pytest.mark.usefixtures("targets")
async def test_a_declined_card_is_payment_declined_and_its_void_finds_nothing_held(
    psp: RunningPsp,
) -> None:
    order = str(new_id())

    with pytest.raises(errors.PaymentDeclined, match="generic_decline"):
        await run("AuthorizePaymentFunctionArn", authorize_event(order, "pm_card_chargeDeclined"))
    voided = await run("VoidPaymentFunctionArn", {"order_id": order, "reason": "payment_declined"})

    assert voided == {"status": "FAILED"}
    assert [i["status"] for i in await psp.intents(order_id=order)] == ["requires_payment_method"]


@pytest.mark.usefixtures("targets")
async def test_an_unknown_authorization_is_retryable_and_voided_only_once_it_is_known(
    psp: RunningPsp,
) -> None:
    order = str(new_id())
    compensation = {"order_id": order, "reason": "timeout"}
    await psp.set_faults(error_rate=1.0)
    try:
        with pytest.raises(errors.RetryableError, match="UNAVAILABLE"):
            await run("AuthorizePaymentFunctionArn", authorize_event(order))
        with pytest.raises(errors.RetryableError, match="not known yet"):
            await run("VoidPaymentFunctionArn", compensation)
    finally:
        await psp.set_faults()

    authorization = await run("AuthorizePaymentFunctionArn", authorize_event(order))
    voided = await run("VoidPaymentFunctionArn", compensation)

    assert authorization["status"] == "AUTHORIZED"
    assert voided == {"status": "VOIDED"}
    assert [i["status"] for i in await psp.intents(order_id=order)] == ["canceled"]


@pytest.mark.usefixtures("targets")
async def test_compensating_an_order_that_never_reserved_or_paid_succeeds(
    stock: InventoryStub,
) -> None:
    order = str(new_id())
    event = {"order_id": order, "reason": "timeout"}

    assert await run("VoidPaymentFunctionArn", event) == {"status": "NONE"}
    # Inventory leaves a released mark, so a reservation that arrives late is refused for good.
    assert await run("ReleaseInventoryFunctionArn", event) == {"status": "RELEASED"}
    sku = await stocked_sku(stock, 1)
    with pytest.raises(errors.StepFailed, match="RESERVATION_CLOSED"):
        await run(
            "ReserveInventoryFunctionArn",
            {"order_id": order, "lines": [{"sku": sku, "quantity": 1}]},
        )
    assert await reserved(stock, sku) == 0


@pytest.mark.usefixtures("targets")
async def test_commit_is_repeatable_and_a_committed_reservation_cannot_be_released(
    stock: InventoryStub,
) -> None:
    order = str(new_id())
    sku = await stocked_sku(stock, 2)
    await run(
        "ReserveInventoryFunctionArn", {"order_id": order, "lines": [{"sku": sku, "quantity": 1}]}
    )

    commits = [await run("CommitReservationFunctionArn", {"order_id": order}) for _ in range(2)]
    assert commits[0] == commits[1]
    assert commits[0]["status"] == "COMMITTED"

    with pytest.raises(errors.ReservationCommitted):
        await run(
            "ReleaseInventoryFunctionArn", {"order_id": order, "reason": "customer_cancelled"}
        )


@pytest.mark.usefixtures("targets")
async def test_committing_a_released_reservation_is_reservation_expired(
    stock: InventoryStub,
) -> None:
    order = str(new_id())
    sku = await stocked_sku(stock, 2)
    await run(
        "ReserveInventoryFunctionArn", {"order_id": order, "lines": [{"sku": sku, "quantity": 1}]}
    )
    await run("ReleaseInventoryFunctionArn", {"order_id": order, "reason": "timeout"})

    with pytest.raises(errors.ReservationExpired):
        await run("CommitReservationFunctionArn", {"order_id": order})


async def test_an_unreachable_service_is_retryable_within_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INVENTORY_TARGET", f"127.0.0.1:{free_port()}")
    clients.reset()
    event = {"order_id": str(new_id()), "lines": [{"sku": "MUG-1", "quantity": 1}]}
    started = time.monotonic()
    try:
        with pytest.raises(errors.RetryableError, match="UNAVAILABLE"):
            await run("ReserveInventoryFunctionArn", event, InvocationContext(2.0))
    finally:
        clients.reset()
    assert time.monotonic() - started < 2.0


@pytest.fixture
def silent_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A port that accepts connections and never says a word, as a hung service does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        monkeypatch.setenv("PAYMENT_TARGET", f"127.0.0.1:{listener.getsockname()[1]}")
        clients.reset()
        yield
        clients.reset()


@pytest.mark.usefixtures("silent_service")
async def test_a_silent_service_is_retryable_once_the_invocations_time_is_up() -> None:
    # 1.5 s left in the invocation, less the 0.5 s margin: the call may take 1 s, not the 18 s
    # the payment calls are otherwise allowed.
    started = time.monotonic()
    with pytest.raises(errors.RetryableError, match="DEADLINE_EXCEEDED"):
        await run(
            "AuthorizePaymentFunctionArn", authorize_event(str(new_id())), InvocationContext(1.5)
        )
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 1.5


async def test_an_invocation_with_no_time_left_does_not_call_at_all() -> None:
    with pytest.raises(errors.RetryableError, match="no time left"):
        await run(
            "CommitReservationFunctionArn", {"order_id": str(new_id())}, InvocationContext(0.3)
        )


def test_importing_the_handlers_builds_no_channel_and_reads_no_settings() -> None:
    probe = (
        "from workers.saga_adapters import clients, registry\n"
        "assert registry.HANDLERS\n"
        "assert not clients._channels, clients._channels\n"
        "assert clients.settings.cache_info().currsize == 0\n"
    )
    env = {**os.environ, "INVENTORY_TARGET": "not a target"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
