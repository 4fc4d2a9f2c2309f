"""The saga task handlers against real inventory and payment gRPC servers (real
PostgreSQL, the PSP simulator as a real process): what they return, the named errors they end
with, repeats that are safe, and deadlines that hold when a service is down or silent."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from local_supervisor.embedded import free_port
from marketplace.cart.v1 import cart_service_pb2 as cart_pb
from marketplace.cart.v1 import cart_service_pb2_grpc as cart_grpc
from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.checkout.v1 import checkout_service_pb2_grpc as checkout_grpc
from marketplace.common.v1 import address_pb2, ids_pb2, money_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as inventory_pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from marketplace_platform.grpc_server import RunningServer
from marketplace_platform.ids import new_id
from marketplace_platform.saga.local import LocalSagaStarter
from saga_tasks import clients, errors
from saga_tasks.registry import ASYNC_HANDLERS, HANDLERS
from tests.support.psp import RunningPsp
from tests.support.servers import ServiceServers
from workers.saga_engine.asl.interpreter import Interpreter
from workers.saga_engine.asl.machine import StateMachine
from workers.saga_engine.task_invoker import InProcessTaskInvoker

if TYPE_CHECKING:
    from marketplace.cart.v1.cart_service_pb2_grpc import CartServiceAsyncStub as CartStub
    from marketplace.checkout.v1.checkout_service_pb2_grpc import (
        CheckoutServiceAsyncStub as CheckoutStub,
    )
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
async def payment_server(grpc_servers: ServiceServers, psp: RunningPsp) -> RunningServer:
    return await grpc_servers.payment(
        psp_url=psp.url, psp_timeout_seconds=1.0, psp_breaker_failures=1000
    )


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
    """Invoke a step as the saga engine does: its async core, awaited on this loop."""
    return await ASYNC_HANDLERS[resource](event, context)


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
async def test_the_lambda_handler_is_the_same_step_blocking_on_its_threads_own_loop(
    stock: InventoryStub,
) -> None:
    sku = await stocked_sku(stock, 5)
    event = {"order_id": str(new_id()), "lines": [{"sku": sku, "quantity": 2}]}
    lambda_handler = HANDLERS["ReserveInventoryFunctionArn"]

    def two_invocations() -> tuple[Any, Any, int]:
        # A Lambda container's invocations follow one another on one thread and one channel.
        first = lambda_handler(event, LAMBDA)
        again = lambda_handler(event, LAMBDA)
        return first, again, sum(len(channels) for channels in clients._channels.values())

    first, again, channels = await asyncio.to_thread(two_invocations)
    awaited = await run("ReserveInventoryFunctionArn", event)

    assert first == again == awaited
    assert first["status"] == "ACTIVE"
    assert channels == 1
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
async def test_commit_is_repeatable_and_releasing_a_committed_reservation_restocks_it(
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

    # A cancel seen at ConfirmOrder compensates after the commit: the sold unit comes back once.
    for _ in range(2):
        await run(
            "ReleaseInventoryFunctionArn", {"order_id": order, "reason": "customer_cancelled"}
        )
    level = (
        await stock.GetStock(inventory_pb.GetStockRequest(sku=ids_pb2.Sku(value=sku)))
    ).stock_level
    assert (level.on_hand, level.sold, level.reserved) == (2, 0, 0)


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
        "from saga_tasks import clients, registry\n"
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


# --- the checkout service's steps, with the real cart, inventory and payment services ---------


@dataclass(frozen=True)
class Shop:
    """Stubs to set a shop up and place orders, and the saga starter PlaceOrder writes to."""

    cart: CartStub
    checkout: CheckoutStub
    inventory: InventoryStub
    saga: LocalSagaStarter


@pytest.fixture(scope="module")
async def cart_server(grpc_servers: ServiceServers, redis_server_url: str) -> RunningServer:
    return await grpc_servers.cart(redis_url=redis_server_url, cart_cache_enabled=False)


@pytest.fixture
async def shop(
    monkeypatch: pytest.MonkeyPatch,
    targets: None,
    engine: AsyncEngine,
    cart_server: RunningServer,
    checkout_server: RunningServer,
    inventory_server: RunningServer,
) -> AsyncIterator[Shop]:
    monkeypatch.setenv("CHECKOUT_TARGET", f"127.0.0.1:{checkout_server.port}")
    clients.reset()
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        for server in (cart_server, checkout_server, inventory_server)
    ]
    yield Shop(
        cart_grpc.CartServiceStub(channels[0]),
        checkout_grpc.CheckoutServiceStub(channels[1]),
        inventory_grpc.InventoryServiceStub(channels[2]),
        LocalSagaStarter(engine),
    )
    for channel in channels:
        await channel.close()


async def placed_order(
    shop: Shop, method: str = "pm_card_visa", sku: str | None = None
) -> dict[str, Any]:
    """Stock a product, fill a cart with 2 of it, place the order: the saga's input."""
    sku = sku or await stocked_sku(shop.inventory, 10)
    unique = new_id().hex
    customer = ids_pb2.CustomerId(value=f"customer-{unique[-12:]}")
    await shop.cart.UpsertProduct(
        cart_pb.UpsertProductRequest(
            idempotency_key=f"product-{unique}",
            sku=ids_pb2.Sku(value=sku),
            name="Mug",
            price=money_pb2.Money(amount_minor=1250, currency="USD"),
            merchant_id=ids_pb2.MerchantId(value="acme"),
        )
    )
    created = await shop.cart.CreateCart(
        cart_pb.CreateCartRequest(idempotency_key=f"cart-{unique}", customer_id=customer)
    )
    await shop.cart.SetItemQuantity(
        cart_pb.SetItemQuantityRequest(
            idempotency_key=f"line-{unique}",
            cart_id=created.cart.cart_id,
            customer_id=customer,
            sku=ids_pb2.Sku(value=sku),
            quantity=2,
        )
    )
    placed = await shop.checkout.PlaceOrder(
        checkout_pb.PlaceOrderRequest(
            idempotency_key=f"place-{unique}",
            customer_id=customer,
            cart_id=created.cart.cart_id,
            payment_method=method,
            shipping_address=address_pb2.Address(
                name="Ada Lovelace", line1="1 Main St", city="Springfield", postal_code="12345",
                country="US",
            ),
        )
    )  # fmt: skip
    execution = await shop.saga.describe(placed.order_id.value)
    assert execution is not None
    return dict(execution.input)


async def order_of(shop: Shop, saga_input: dict[str, Any]) -> checkout_pb.Order:
    response = await shop.checkout.GetOrder(
        checkout_pb.GetOrderRequest(
            order_id=ids_pb2.OrderId(value=saga_input["order_id"]),
            customer_id=ids_pb2.CustomerId(value=saga_input["customer_id"]),
        )
    )
    return response.order


async def through_the_pivot(saga_input: dict[str, Any]) -> dict[str, Any]:
    """Run the steps up to and including the authorization as the definition does."""
    order = {"order_id": saga_input["order_id"]}
    state = dict(saga_input)
    state["tax"] = await run("CalculateTaxFunctionArn", order)
    state["fraud"] = await run("FraudCheckFunctionArn", order)
    state["reservation"] = await run(
        "ReserveInventoryFunctionArn", order | {"lines": saga_input["lines"]}
    )
    state["payment"] = await run(
        "AuthorizePaymentFunctionArn",
        order
        | {
            "customer_id": saga_input["customer_id"],
            "payment_method": saga_input["payment_method"],
            "amount": state["tax"]["total"],
        },
    )
    return state


async def test_the_checkout_steps_take_a_placed_order_to_confirmed(shop: Shop) -> None:
    saga_input = await placed_order(shop)
    order = {"order_id": saga_input["order_id"]}

    state = await through_the_pivot(saga_input)
    await run("CommitReservationFunctionArn", order)
    confirm = order | {
        "reservation_id": state["reservation"]["reservation_id"],
        "payment_id": state["payment"]["payment_id"],
    }
    confirmed = [await run("ConfirmOrderFunctionArn", confirm) for _ in range(2)]

    assert state["tax"]["total"]["amount_minor"] >= saga_input["subtotal"]["amount_minor"]
    assert state["payment"]["authorized"] == state["tax"]["total"]
    assert confirmed == [{"order_id": order["order_id"], "status": "CONFIRMED"}] * 2
    stored = await order_of(shop, saga_input)
    assert stored.status == checkout_pb.ORDER_STATUS_CONFIRMED
    assert stored.total.amount_minor == state["tax"]["total"]["amount_minor"]


async def test_a_highest_risk_card_is_fraud_rejected_and_the_order_ends_with_that_reason(
    shop: Shop,
) -> None:
    saga_input = await placed_order(shop, method="pm_card_riskLevelHighest")
    order = {"order_id": saga_input["order_id"]}
    await run("CalculateTaxFunctionArn", order)

    with pytest.raises(errors.FraudRejected, match="highest risk") as rejected:
        await run("FraudCheckFunctionArn", order)
    caught = {"Error": type(rejected.value).__name__, "Cause": str(rejected.value)}
    compensation = order | {"reason": "fraud_rejected"}
    await run("VoidPaymentFunctionArn", compensation)
    await run("ReleaseInventoryFunctionArn", compensation)
    failed = [await run("FailOrderFunctionArn", compensation | {"error": caught}) for _ in range(2)]

    assert failed == [{"status": "CANCELLED", "reason": "fraud_rejected"}] * 2
    stored = await order_of(shop, saga_input)
    assert stored.status == checkout_pb.ORDER_STATUS_CANCELLED
    assert stored.failure_reason == checkout_pb.FAILURE_REASON_FRAUD_REJECTED
    assert stored.failure_detail.startswith("FraudRejected: risk score 95")


async def test_a_cancel_asked_for_before_confirm_voids_releases_and_cancels_the_order(
    shop: Shop, psp: RunningPsp
) -> None:
    sku = await stocked_sku(shop.inventory, 10)
    saga_input = await placed_order(shop, sku=sku)
    order = {"order_id": saga_input["order_id"]}
    state = await through_the_pivot(saga_input)
    assert await reserved(shop.inventory, sku) == 2
    await shop.checkout.CancelOrder(
        checkout_pb.CancelOrderRequest(
            idempotency_key=f"cancel-{order['order_id']}",
            order_id=ids_pb2.OrderId(value=order["order_id"]),
            customer_id=ids_pb2.CustomerId(value=saga_input["customer_id"]),
        )
    )

    with pytest.raises(errors.OrderCancelRequested):
        await run(
            "ConfirmOrderFunctionArn",
            order
            | {
                "reservation_id": state["reservation"]["reservation_id"],
                "payment_id": state["payment"]["payment_id"],
            },
        )
    compensation = order | {"reason": "customer_cancelled"}
    voided = await run("VoidPaymentFunctionArn", compensation)
    # Nothing was committed before ConfirmOrder, so the held stock goes back.
    released = await run("ReleaseInventoryFunctionArn", compensation)
    failed = await run(
        "FailOrderFunctionArn", compensation | {"error": {"Error": "OrderCancelRequested"}}
    )

    assert voided == {"status": "VOIDED"}
    assert [i["status"] for i in await psp.intents(order_id=order["order_id"])] == ["canceled"]
    assert released == {"status": "RELEASED"}
    level = (
        await shop.inventory.GetStock(inventory_pb.GetStockRequest(sku=ids_pb2.Sku(value=sku)))
    ).stock_level
    assert (level.on_hand, level.reserved, level.sold, level.available) == (10, 0, 0, 10)
    assert failed == {"status": "CANCELLED", "reason": "customer_cancelled"}
    stored = await order_of(shop, saga_input)
    assert stored.status == checkout_pb.ORDER_STATUS_CANCELLED
    assert stored.failure_reason == checkout_pb.FAILURE_REASON_CUSTOMER_CANCELLED


async def test_the_engine_runs_the_definition_through_the_adapters_to_either_end(
    shop: Shop, psp: RunningPsp
) -> None:
    machine = checkout_saga()
    sku = await stocked_sku(shop.inventory, 10)
    good = await placed_order(shop, sku=sku)
    declined = await placed_order(shop, "pm_card_chargeDeclined", sku=sku)

    with ThreadPoolExecutor(max_workers=4) as executor:
        interpreter = Interpreter(machine, InProcessTaskInvoker(ASYNC_HANDLERS, executor))
        confirmed, _ = await interpreter.run(good, execution(good))
        cancelled, _ = await interpreter.run(declined, execution(declined))

    assert confirmed.status == "SUCCEEDED"
    assert (await order_of(shop, good)).status == checkout_pb.ORDER_STATUS_CONFIRMED
    assert [i["status"] for i in await psp.intents(order_id=good["order_id"])] == [
        "requires_capture"
    ]
    assert (cancelled.error, cancelled.cause) == ("OrderCancelled", "payment_declined")
    order = await order_of(shop, declined)
    assert order.status == checkout_pb.ORDER_STATUS_CANCELLED
    assert order.failure_reason == checkout_pb.FAILURE_REASON_PAYMENT_DECLINED
    level = (
        await shop.inventory.GetStock(inventory_pb.GetStockRequest(sku=ids_pb2.Sku(value=sku)))
    ).stock_level
    assert (level.sold, level.reserved, level.available) == (2, 0, 8)


def checkout_saga() -> StateMachine:
    """The state machine of the file Step Functions and the local engine both run."""
    return StateMachine.from_definition(
        json.loads((REPO / "deploy" / "ecs" / "checkout_saga.asl.json").read_text())
    )


def execution(saga_input: dict[str, Any]) -> dict[str, Any]:
    """The `$$` context object of an execution of `saga_input` starting now."""
    started = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"Execution": {"Name": saga_input["order_id"], "StartTime": started}}


def cancelling_after(step: str) -> dict[str, Any]:
    """The real handlers, where `step` is followed by the customer's cancel of the order, as
    if it arrived while the state machine moved on to the next state."""

    async def then_cancel(event: dict[str, Any], context: Any) -> Any:
        result = await ASYNC_HANDLERS[step](event, context)
        await clients.checkout().CancelOrder(
            checkout_pb.CancelOrderRequest(
                idempotency_key=f"cancel-{event['order_id']}",
                order_id=ids_pb2.OrderId(value=event["order_id"]),
                customer_id=ids_pb2.CustomerId(value=event["customer_id"]),
            ),
            timeout=10,
        )
        return result

    return ASYNC_HANDLERS | {step: then_cancel}


async def test_the_engine_compensates_a_cancel_asked_for_after_the_pivot_down_to_no_stock_held(
    shop: Shop, psp: RunningPsp
) -> None:
    machine = checkout_saga()
    sku = await stocked_sku(shop.inventory, 10)
    saga_input = await placed_order(shop, sku=sku)

    with ThreadPoolExecutor(max_workers=4) as executor:
        handlers = cancelling_after("AuthorizePaymentFunctionArn")
        interpreter = Interpreter(machine, InProcessTaskInvoker(handlers, executor))
        ended, _ = await interpreter.run(saga_input, execution(saga_input))

    assert (ended.error, ended.cause) == ("OrderCancelled", "customer_cancelled")
    order = await order_of(shop, saga_input)
    assert order.status == checkout_pb.ORDER_STATUS_CANCELLED
    assert order.failure_reason == checkout_pb.FAILURE_REASON_CUSTOMER_CANCELLED
    intents = await psp.intents(order_id=saga_input["order_id"])
    assert [i["status"] for i in intents] == ["canceled"]
    level = (
        await shop.inventory.GetStock(inventory_pb.GetStockRequest(sku=ids_pb2.Sku(value=sku)))
    ).stock_level
    assert (level.on_hand, level.reserved, level.sold, level.available) == (10, 0, 0, 10)


async def test_a_commit_that_keeps_failing_never_leaves_a_confirmed_order_on_a_hold(
    shop: Shop, psp: RunningPsp
) -> None:
    # Before the fix the order was CONFIRMED first and a parked commit left its units on an
    # ACTIVE reservation that the sweeper later expired: sold units back on sale.
    machine = checkout_saga()
    sku = await stocked_sku(shop.inventory, 10)
    saga_input = await placed_order(shop, sku=sku)

    def inventory_down(event: dict[str, Any], context: Any) -> Any:
        raise errors.RetryableError("commit: UNAVAILABLE -: inventory is restarting")

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    # A blocking handler among the async ones runs on the pool, as SAGA_HANDLERS may mix them.
    handlers = ASYNC_HANDLERS | {"CommitReservationFunctionArn": inventory_down}
    with ThreadPoolExecutor(max_workers=4) as executor:
        interpreter = Interpreter(machine, InProcessTaskInvoker(handlers, executor), sleep=no_wait)
        ended, _ = await interpreter.run(saga_input, execution(saga_input))

    assert (ended.error, ended.cause) == ("OrderCancelled", "timeout")
    order = await order_of(shop, saga_input)
    assert order.status == checkout_pb.ORDER_STATUS_CANCELLED
    assert [i["status"] for i in await psp.intents(order_id=saga_input["order_id"])] == ["canceled"]
    level = (
        await shop.inventory.GetStock(inventory_pb.GetStockRequest(sku=ids_pb2.Sku(value=sku)))
    ).stock_level
    assert (level.on_hand, level.reserved, level.sold, level.available) == (10, 0, 0, 10)
