"""The checkout service over real gRPC and a real PostgreSQL: PlaceOrder's idempotency under
real races, one order per cart, the one-transaction write, the saga steps, cancellation, the
completer, the timeout sweep and the key reaper. Cart, payment and the saga engine are fakes
that subclass checkout's own ports (tests/integration/test_checkout_with_cart.py uses the real
cart service)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from marketplace.checkout.v1 import checkout_service_pb2 as pb
from marketplace.checkout.v1 import checkout_service_pb2_grpc as pb_grpc
from marketplace.common.v1 import ids_pb2
from marketplace.events.v1 import envelope_pb2, order_events_pb2, shipping_events_pb2
from marketplace_platform import errors
from marketplace_platform.channels import open_channel
from marketplace_platform.db import unit_of_work_factory
from marketplace_platform.grpc_errors import from_rpc_error
from marketplace_platform.money import Money
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.saga import SagaStarter, StartedExecution
from services.checkout import bootstrap as checkout
from services.checkout.adapters import tables
from services.checkout.adapters.unit_of_work import CheckoutUnitOfWork
from services.checkout.domain.order import OrderLine, ShippingAddress
from services.checkout.service_layer import housekeeping, placement
from services.checkout.service_layer.deps import CheckoutDeps
from services.checkout.service_layer.ports import (
    CartPort,
    CartStatus,
    PaymentSummary,
    PricedCart,
    PricingProblem,
)
from tests.support.checkout import FakePayments, place_request
from tests.support.keys import customer_id as customer
from tests.support.keys import idempotency_key as new_key
from tests.support.polling import eventually
from tests.support.refusals import refusal
from tests.support.servers import ServiceServers

if TYPE_CHECKING:
    from marketplace.checkout.v1.checkout_service_pb2_grpc import (
        CheckoutServiceAsyncStub as Stub,
    )

RACERS = 20
WITHIN = 30.0


# --- fakes of checkout's ports -------------------------------------------------------------


@dataclass
class FakeCart:
    customer_id: str
    lines: tuple[OrderLine, ...]
    status: CartStatus = CartStatus.OPEN
    order_id: uuid.UUID | None = None


class FakeCarts(CartPort):
    """Carts in memory; `hold` lets a test keep PriceCart calls in flight."""

    def __init__(self) -> None:
        self.carts: dict[uuid.UUID, FakeCart] = {}
        self.hold: Callable[[], Awaitable[Any]] | None = None
        self.priced = 0
        self.checked_out: list[tuple[uuid.UUID, uuid.UUID]] = []

    def add(self, customer_id: str, lines: tuple[OrderLine, ...] | None = None) -> uuid.UUID:
        cart_id = uuid.uuid4()
        default = (
            OrderLine("MUG-1", "acme", "Mug", 2, Money(500, "USD")),
            OrderLine("TEE-1", "globex", "Tee", 1, Money(1500, "USD")),
        )
        self.carts[cart_id] = FakeCart(customer_id, default if lines is None else lines)
        return cart_id

    async def price_cart(self, *, cart_id: uuid.UUID, customer_id: str) -> PricedCart:
        self.priced += 1
        if self.hold is not None:
            await self.hold()
        cart = self.carts.get(cart_id)
        if cart is None or cart.customer_id != customer_id:
            raise errors.NotFound(f"no cart {cart_id}")
        subtotal = Money(sum(line.line_total.amount_minor for line in cart.lines), "USD")
        problems = () if cart.lines else (PricingProblem("EMPTY_CART", "the cart is empty"),)
        return PricedCart(
            cart_id, customer_id, cart.status, cart.lines, subtotal, problems, cart.order_id
        )

    async def mark_checked_out(
        self, *, cart_id: uuid.UUID, customer_id: str, order_id: uuid.UUID
    ) -> None:
        cart = self.carts[cart_id]
        if cart.order_id not in (None, order_id):
            raise errors.FailedPrecondition("checked out by another order")
        cart.status, cart.order_id = CartStatus.CHECKED_OUT, order_id
        self.checked_out.append((cart_id, order_id))


class RecordingSagaStarter(SagaStarter):
    """Records executions by name, like Step Functions; `fail` simulates a lost start."""

    def __init__(self) -> None:
        self.started: dict[str, Mapping[str, Any]] = {}
        self.calls = 0
        self.fail = False

    async def start_execution(self, *, name: str, payload: Mapping[str, Any]) -> StartedExecution:
        self.calls += 1
        if self.fail:
            raise errors.DependencyUnavailable("saga engine unreachable")
        existed = name in self.started
        self.started.setdefault(name, dict(payload))
        return StartedExecution(f"exec-{name}", name, already_existed=existed)


def usd(amount: int) -> Money:
    return Money(amount, "USD")


# --- fixtures ------------------------------------------------------------------------------


@dataclass
class Rig:
    stub: Stub
    carts: FakeCarts
    saga: RecordingSagaStarter
    payments: FakePayments
    deps: CheckoutDeps
    engine: AsyncEngine
    settings: checkout.CheckoutSettings


pytestmark = pytest.mark.engine(db_pool_size=25)


@pytest.fixture(scope="module")
async def rig(engine: AsyncEngine, grpc_servers: ServiceServers) -> AsyncIterator[Rig]:
    settings = checkout.CheckoutSettings(grpc_port=0, idempotency_lease_seconds=30)
    carts, saga, payments = FakeCarts(), RecordingSagaStarter(), FakePayments()
    factory = checkout.build(settings, carts=carts, payments=payments, saga=saga)
    server = await grpc_servers.start(settings, factory)
    channel = open_channel(f"127.0.0.1:{server.port}", default_timeout=WITHIN)
    deps = CheckoutDeps(
        unit_of_work=unit_of_work_factory(
            engine, OutboxWriter(tables.outbox, producer="checkout"), kind=CheckoutUnitOfWork
        ),
        carts=carts,
        payments=payments,
        saga=saga,
    )
    yield Rig(pb_grpc.CheckoutServiceStub(channel), carts, saga, payments, deps, engine, settings)
    await channel.close()


@pytest.fixture(autouse=True)
def reset_fakes(rig: Rig) -> None:
    rig.carts.hold = None
    rig.saga.fail = False


# --- helpers -------------------------------------------------------------------------------


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar_one()


async def orders_for_cart(engine: AsyncEngine, cart_id: uuid.UUID) -> int:
    return int(
        await scalar(engine, "SELECT count(*) FROM checkout.orders WHERE cart_id = :c", c=cart_id)
    )


async def outbox_events(engine: AsyncEngine, order_id: str) -> list[envelope_pb2.EventEnvelope]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(tables.outbox.c.envelope)
            .where(tables.outbox.c.aggregate_id == order_id)
            .order_by(tables.outbox.c.id)
        )
        return [envelope_pb2.EventEnvelope.FromString(row.envelope) for row in rows]


async def key_state(engine: AsyncEngine, customer_id: str, key: str) -> str | None:
    async with engine.connect() as connection:
        found = await connection.execute(
            select(tables.idempotency_keys.c.state).where(
                tables.idempotency_keys.c.customer_id == customer_id,
                tables.idempotency_keys.c.key == key,
            )
        )
        state: str | None = found.scalar_one_or_none()
        return state


async def place(rig: Rig, customer_id: str, cart_id: uuid.UUID, **kw: Any) -> str:
    response = await rig.stub.PlaceOrder(place_request(customer_id, cart_id, new_key(), **kw))
    return str(response.order_id.value)


async def saga_started_at(engine: AsyncEngine, order_id: str) -> Any:
    return await scalar(
        engine, "SELECT saga_started_at FROM checkout.orders WHERE order_id = :o",
        o=uuid.UUID(order_id),
    )  # fmt: skip


def ids(order_id: str) -> dict[str, Any]:
    return {"order_id": ids_pb2.OrderId(value=order_id)}


# --- PlaceOrder ----------------------------------------------------------------------------


async def test_place_order_writes_one_order_and_a_replay_answers_the_first(rig: Rig) -> None:
    buyer, key = customer(), new_key()
    cart_id = rig.carts.add(buyer)
    first = await rig.stub.PlaceOrder(place_request(buyer, cart_id, key))
    again = await rig.stub.PlaceOrder(place_request(buyer, cart_id, key))

    assert first.status == pb.ORDER_STATUS_PENDING
    assert not first.replayed
    assert again.replayed
    assert (again.order_id, again.status) == (first.order_id, first.status)
    assert await orders_for_cart(rig.engine, cart_id) == 1
    assert await key_state(rig.engine, buyer, key) == "COMPLETED"
    order_id = first.order_id.value
    pending = [e for e in await outbox_events(rig.engine, order_id)]
    assert [e.event_type for e in pending] == ["marketplace.events.v1.OrderPending"]
    event = order_events_pb2.OrderPending()
    pending[0].payload.Unpack(event)
    assert (event.cart_id.value, event.subtotal.amount_minor) == (str(cart_id), 2500)
    # After the commit: the cart is frozen by the order and the saga runs under its id.
    assert (cart_id, uuid.UUID(order_id)) in rig.carts.checked_out
    assert rig.saga.started[order_id] == {
        "order_id": order_id,
        "customer_id": buyer,
        "payment_method": "pm_card_visa",
        "lines": [{"sku": "MUG-1", "quantity": 2}, {"sku": "TEE-1", "quantity": 1}],
        "subtotal": {"amount_minor": 2500, "currency": "USD"},
    }
    started_at = await scalar(
        rig.engine, "SELECT saga_started_at FROM checkout.orders WHERE order_id = :o",
        o=uuid.UUID(order_id),
    )  # fmt: skip
    assert started_at is not None


async def test_the_same_key_with_another_request_is_refused(rig: Rig) -> None:
    buyer, key = customer(), new_key()
    cart_id = rig.carts.add(buyer)
    await rig.stub.PlaceOrder(place_request(buyer, cart_id, key))
    for changed in (
        place_request(buyer, cart_id, key, method="pm_card_chargeDeclined"),
        place_request(buyer, cart_id, key, country="DE"),
        place_request(buyer, rig.carts.add(buyer), key),
    ):
        error = await refusal(rig.stub.PlaceOrder(changed))
        assert isinstance(error, errors.IdempotencyKeyReused)  # the gateway's 422
    assert await orders_for_cart(rig.engine, cart_id) == 1


async def test_keys_are_scoped_to_the_customer(rig: Rig) -> None:
    key = new_key()
    one, two = customer(), customer()
    first = await rig.stub.PlaceOrder(place_request(one, rig.carts.add(one), key))
    second = await rig.stub.PlaceOrder(place_request(two, rig.carts.add(two), key))
    assert first.order_id != second.order_id
    assert not second.replayed


async def test_racing_identical_requests_make_one_order(rig: Rig) -> None:
    buyer, key = customer(), new_key()
    cart_id = rig.carts.add(buyer)
    request = place_request(buyer, cart_id, key)
    outcomes = await asyncio.gather(
        *(rig.stub.PlaceOrder(request) for _ in range(RACERS)), return_exceptions=True
    )

    answers = [o for o in outcomes if isinstance(o, pb.PlaceOrderResponse)]
    refused = [from_rpc_error(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(answers) + len(refused) == RACERS, outcomes
    assert all(isinstance(r, errors.RequestInFlight) for r in refused), refused
    assert [a.replayed for a in answers].count(False) == 1
    assert len({a.order_id.value for a in answers}) == 1
    assert await orders_for_cart(rig.engine, cart_id) == 1
    assert len(rig.saga.started.keys() & {answers[0].order_id.value}) == 1


async def test_requests_that_find_the_first_in_flight_are_told_so(rig: Rig) -> None:
    buyer, key = customer(), new_key()
    cart_id = rig.carts.add(buyer)
    release = asyncio.Event()
    rig.carts.hold = release.wait
    request = place_request(buyer, cart_id, key)
    calls = [asyncio.ensure_future(rig.stub.PlaceOrder(request)) for _ in range(RACERS)]

    # Every request but the one holding the key is refused while it is held in PriceCart.
    done: list[Any] = []
    async with asyncio.timeout(WITHIN):
        for next_done in asyncio.as_completed(calls):
            try:
                done.append(await next_done)
            except grpc.aio.AioRpcError as error:
                done.append(from_rpc_error(error))
            if len(done) == RACERS - 1:
                break
    assert all(isinstance(d, errors.RequestInFlight) for d in done), done
    release.set()
    first = await asyncio.gather(*calls, return_exceptions=True)
    placed = [r for r in first if isinstance(r, pb.PlaceOrderResponse)]
    assert len(placed) == 1
    assert not placed[0].replayed
    replay = await rig.stub.PlaceOrder(request)
    assert (replay.order_id, replay.replayed) == (placed[0].order_id, True)
    assert await orders_for_cart(rig.engine, cart_id) == 1


async def test_a_key_reaped_while_its_cart_is_priced_is_claimed_again_with_the_order(
    rig: Rig,
) -> None:
    buyer, key = customer(), new_key()
    cart_id = rig.carts.add(buyer)

    async def reap_the_key() -> None:  # a request so slow that the reaper took its key
        async with rig.engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM checkout.idempotency_keys WHERE customer_id = :c AND key = :k"),
                {"c": buyer, "k": key},
            )

    rig.carts.hold = reap_the_key
    request = place_request(buyer, cart_id, key)
    placed = await rig.stub.PlaceOrder(request)
    rig.carts.hold = None
    assert not placed.replayed
    assert await key_state(rig.engine, buyer, key) == "COMPLETED"
    replay = await rig.stub.PlaceOrder(request)
    assert (replay.order_id, replay.replayed) == (placed.order_id, True)
    assert await orders_for_cart(rig.engine, cart_id) == 1


async def test_a_request_whose_lease_was_taken_over_replays_the_order_placed_first(
    rig: Rig,
) -> None:
    buyer, key = customer(), new_key()
    cart_id = rig.carts.add(buyer)
    release, held = asyncio.Event(), asyncio.Event()

    async def hold_the_first() -> None:
        if not held.is_set():
            held.set()
            await release.wait()

    rig.carts.hold = hold_the_first
    request = place_request(buyer, cart_id, key)
    slow = asyncio.ensure_future(rig.stub.PlaceOrder(request))
    async with asyncio.timeout(WITHIN):
        await held.wait()
    async with rig.engine.begin() as connection:  # the slow request's lease runs out
        await connection.execute(
            update(tables.idempotency_keys)
            .where(
                tables.idempotency_keys.c.customer_id == buyer,
                tables.idempotency_keys.c.key == key,
            )
            .values(locked_until=func.now() - timedelta(seconds=1))
        )
    took_over = await rig.stub.PlaceOrder(request)
    # The slow request priced the cart before the one that took over checked it out.
    rig.carts.carts[cart_id].status, rig.carts.carts[cart_id].order_id = CartStatus.OPEN, None
    release.set()
    first = await slow
    rig.carts.hold = None
    assert not took_over.replayed
    assert (first.order_id, first.replayed) == (took_over.order_id, True)
    assert await orders_for_cart(rig.engine, cart_id) == 1


async def test_different_keys_racing_on_one_cart_make_one_order(rig: Rig) -> None:
    buyer = customer()
    cart_id = rig.carts.add(buyer)
    # Every racer is priced while the cart is still OPEN, so only the database can decide.
    barrier = asyncio.Barrier(RACERS)
    rig.carts.hold = barrier.wait
    outcomes = await asyncio.gather(
        *(rig.stub.PlaceOrder(place_request(buyer, cart_id, new_key())) for _ in range(RACERS)),
        return_exceptions=True,
    )

    placed = [o for o in outcomes if isinstance(o, pb.PlaceOrderResponse)]
    assert len(placed) == 1, outcomes
    winner = placed[0].order_id.value
    for outcome in outcomes:
        if isinstance(outcome, grpc.aio.AioRpcError):
            error = from_rpc_error(outcome)
            assert isinstance(error, errors.FailedPrecondition)
            assert error.reason == "CART_ALREADY_ORDERED"
            assert error.metadata["existing_order_id"] == winner
    assert await orders_for_cart(rig.engine, cart_id) == 1

    # Later, the cart service itself says CHECKED_OUT: refused with the same order id.
    rig.carts.hold = None
    later = await refusal(rig.stub.PlaceOrder(place_request(buyer, cart_id, new_key())))
    assert later.reason == "CART_ALREADY_ORDERED"
    assert later.metadata["existing_order_id"] == winner


async def test_unplaceable_carts_are_refused_and_free_the_key(rig: Rig) -> None:
    buyer, key = customer(), new_key()
    empty = rig.carts.add(buyer, lines=())
    error = await refusal(rig.stub.PlaceOrder(place_request(buyer, empty, key)))
    assert error.reason == "CART_NOT_CHECKOUTABLE"
    # The key is not stuck in flight: the same request can be retried at once.
    assert (await refusal(rig.stub.PlaceOrder(place_request(buyer, empty, key)))).reason == (
        "CART_NOT_CHECKOUTABLE"
    )
    someone_elses = rig.carts.add(customer())
    other = await refusal(rig.stub.PlaceOrder(place_request(buyer, someone_elses, new_key())))
    assert isinstance(other, errors.NotFound)
    assert await orders_for_cart(rig.engine, someone_elses) == 0


class CommitFails(CheckoutUnitOfWork):
    """A unit of work whose commit fails once the OrderPending event was written."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None and self._wrote_order_pending:
            await super().__aexit__(RuntimeError, None, None)  # roll back
            raise RuntimeError("injected failure at commit")
        await super().__aexit__(exc_type, exc, traceback)

    _wrote_order_pending = False

    async def publish(self, payload: Any, **kw: Any) -> envelope_pb2.EventEnvelope:
        envelope = await super().publish(payload, **kw)
        self._wrote_order_pending = isinstance(payload, order_events_pb2.OrderPending)
        return envelope


async def test_a_failed_transaction_leaves_no_order_no_event_and_no_completed_key(
    rig: Rig,
) -> None:
    buyer, key = customer(), new_key()
    cart_id = rig.carts.add(buyer)
    sessions = async_sessionmaker(rig.engine, expire_on_commit=False, autobegin=False)
    outbox = OutboxWriter(tables.outbox, producer="checkout")
    failing = CheckoutDeps(
        unit_of_work=lambda: CommitFails(sessions, outbox),
        carts=rig.carts,
        payments=rig.payments,
        saga=rig.saga,
    )
    command = placement.PlaceOrder(
        idempotency_key=key,
        customer_id=buyer,
        cart_id=cart_id,
        payment_method="pm_card_visa",
        shipping_address=ShippingAddress("Ada", "1 Main St", "Springfield", "12345", "US"),
    )
    events_before = await scalar(rig.engine, "SELECT count(*) FROM checkout.outbox")

    with pytest.raises(RuntimeError, match="injected"):
        await placement.place_order(command, deps=failing)

    assert await orders_for_cart(rig.engine, cart_id) == 0
    assert await scalar(rig.engine, "SELECT count(*) FROM checkout.outbox") == events_before
    assert await key_state(rig.engine, buyer, key) == "STARTED"  # claimed, never completed
    assert rig.carts.carts[cart_id].status is CartStatus.OPEN
    # The key was released, so the client's retry places the order, once.
    retried = await placement.place_order(command, deps=rig.deps)
    assert not retried.replayed
    assert await orders_for_cart(rig.engine, cart_id) == 1
    assert await key_state(rig.engine, buyer, key) == "COMPLETED"


# --- the saga's steps ----------------------------------------------------------------------


async def test_tax_fraud_confirm_and_ship(rig: Rig) -> None:
    buyer = customer()
    order_id = await place(rig, buyer, rig.carts.add(buyer))
    key = f"{order_id}:step"

    taxed = await rig.stub.CalculateTax(
        pb.CalculateTaxRequest(idempotency_key=key, **ids(order_id))
    )
    assert (taxed.tax.amount_minor, taxed.total.amount_minor) == (181, 2681)  # 7.25% of 2500
    again = await rig.stub.CalculateTax(
        pb.CalculateTaxRequest(idempotency_key=key, **ids(order_id))
    )
    assert again == taxed
    verdict = await rig.stub.AssessFraud(
        pb.AssessFraudRequest(idempotency_key=key, **ids(order_id))
    )
    assert verdict.decision == pb.FRAUD_DECISION_APPROVE

    reservation, payment = str(uuid.uuid4()), str(uuid.uuid4())
    confirm = pb.ConfirmOrderRequest(
        idempotency_key=key,
        reservation_id=ids_pb2.ReservationId(value=reservation),
        payment_id=ids_pb2.PaymentId(value=payment),
        **ids(order_id),
    )
    confirmed = (await rig.stub.ConfirmOrder(confirm)).order
    assert confirmed.status == pb.ORDER_STATUS_CONFIRMED
    assert confirmed.total.amount_minor == 2681
    assert (await rig.stub.ConfirmOrder(confirm)).order.status == pb.ORDER_STATUS_CONFIRMED
    events = await outbox_events(rig.engine, order_id)
    kinds = Counter(e.event_type for e in events)
    assert kinds == {
        "marketplace.events.v1.OrderPending": 1,
        "marketplace.events.v1.OrderPlaced": 1,
        "marketplace.events.v1.ShipmentRequested": 2,  # acme and globex, once despite the repeat
    }
    requested = []
    for envelope in events:
        if envelope.event_type.endswith("ShipmentRequested"):
            shipment = shipping_events_pb2.ShipmentRequested()
            envelope.payload.Unpack(shipment)
            requested.append(shipment)
    assert sorted(s.merchant_id.value for s in requested) == ["acme", "globex"]
    assert all(len(s.lines) == 1 for s in requested)

    failed = await refusal(
        rig.stub.FailOrder(
            pb.FailOrderRequest(
                idempotency_key=key, failure_reason=pb.FAILURE_REASON_TIMEOUT, **ids(order_id)
            )
        )
    )
    assert isinstance(failed, errors.FailedPrecondition)

    for number, shipment in enumerate(requested):
        shipped = pb.Shipment(
            shipment_id=shipment.shipment_id,
            merchant_id=shipment.merchant_id,
            carrier="UPS",
            tracking_number=f"1Z{number}",
        )
        mark = pb.MarkOrderShippedRequest(idempotency_key=key, shipment=shipped, **ids(order_id))
        order = (await rig.stub.MarkOrderShipped(mark)).order
        assert (await rig.stub.MarkOrderShipped(mark)).order == order  # a repeat is a no-op
    assert order.status == pb.ORDER_STATUS_SHIPPED
    assert len(order.shipments) == 2


async def test_fraud_rejects_the_riskiest_method_and_repeats_its_verdict(rig: Rig) -> None:
    buyer = customer()
    order_id = await place(rig, buyer, rig.carts.add(buyer), method="pm_card_riskLevelHighest")
    request = pb.AssessFraudRequest(idempotency_key=f"{order_id}:fraud", **ids(order_id))
    first = await rig.stub.AssessFraud(request)
    assert first.decision == pb.FRAUD_DECISION_REJECT
    assert await rig.stub.AssessFraud(request) == first


async def test_fail_order_cancels_once_with_its_reason(rig: Rig) -> None:
    buyer = customer()
    order_id = await place(rig, buyer, rig.carts.add(buyer))
    request = pb.FailOrderRequest(
        idempotency_key=f"{order_id}:fail",
        failure_reason=pb.FAILURE_REASON_PAYMENT_DECLINED,
        failure_detail="card_declined",
        **ids(order_id),
    )
    first = (await rig.stub.FailOrder(request)).order
    again = (await rig.stub.FailOrder(request)).order
    assert first.status == again.status == pb.ORDER_STATUS_CANCELLED
    assert again.failure_reason == pb.FAILURE_REASON_PAYMENT_DECLINED
    cancelled = [
        e for e in await outbox_events(rig.engine, order_id) if e.event_type.endswith("Cancelled")
    ]
    assert len(cancelled) == 1
    event = order_events_pb2.OrderCancelled()
    cancelled[0].payload.Unpack(event)
    assert event.previous_status == pb.ORDER_STATUS_PENDING
    # Tax for a cancelled order that never had it is an illegal transition, not a silent pass.
    error = await refusal(
        rig.stub.CalculateTax(pb.CalculateTaxRequest(idempotency_key="k" * 8, **ids(order_id)))
    )
    assert error.reason == "ILLEGAL_ORDER_TRANSITION"


async def test_steps_on_an_unknown_order_are_not_found(rig: Rig) -> None:
    error = await refusal(
        rig.stub.CalculateTax(
            pb.CalculateTaxRequest(idempotency_key="k" * 8, **ids(str(uuid.uuid4())))
        )
    )
    assert isinstance(error, errors.NotFound)


# --- reads and cancellation ----------------------------------------------------------------


async def test_orders_are_only_visible_to_their_customer_newest_first(rig: Rig) -> None:
    buyer = customer()
    placed = [await place(rig, buyer, rig.carts.add(buyer)) for _ in range(3)]
    order = (
        await rig.stub.GetOrder(
            pb.GetOrderRequest(customer_id=ids_pb2.CustomerId(value=buyer), **ids(placed[0]))
        )
    ).order
    assert (order.status, order.subtotal.amount_minor, len(order.lines)) == (
        pb.ORDER_STATUS_PENDING,
        2500,
        2,
    )
    stranger = await refusal(
        rig.stub.GetOrder(
            pb.GetOrderRequest(customer_id=ids_pb2.CustomerId(value=customer()), **ids(placed[0]))
        )
    )
    assert isinstance(stranger, errors.NotFound)

    seen, token = [], ""
    while True:
        page = await rig.stub.ListOrders(
            pb.ListOrdersRequest(
                customer_id=ids_pb2.CustomerId(value=buyer), page_size=2, page_token=token
            )
        )
        seen += [o.order_id.value for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(placed))


async def test_cancelling_a_pending_order_makes_the_saga_compensate(rig: Rig) -> None:
    buyer = customer()
    order_id = await place(rig, buyer, rig.carts.add(buyer))
    await rig.stub.CalculateTax(pb.CalculateTaxRequest(idempotency_key="k" * 8, **ids(order_id)))
    cancel = pb.CancelOrderRequest(
        idempotency_key=new_key(), customer_id=ids_pb2.CustomerId(value=buyer), **ids(order_id)
    )
    assert (await rig.stub.CancelOrder(cancel)).order.status == pb.ORDER_STATUS_PENDING

    confirm = pb.ConfirmOrderRequest(
        idempotency_key="k" * 8,
        reservation_id=ids_pb2.ReservationId(value=str(uuid.uuid4())),
        payment_id=ids_pb2.PaymentId(value=str(uuid.uuid4())),
        **ids(order_id),
    )
    refused = await refusal(rig.stub.ConfirmOrder(confirm))
    assert isinstance(refused, errors.FailedPrecondition)
    assert refused.reason == "CANCEL_REQUESTED"
    failed = await rig.stub.FailOrder(
        pb.FailOrderRequest(
            idempotency_key="k" * 8,
            failure_reason=pb.FAILURE_REASON_CUSTOMER_CANCELLED,
            **ids(order_id),
        )
    )
    assert failed.order.failure_reason == pb.FAILURE_REASON_CUSTOMER_CANCELLED
    again = await rig.stub.CancelOrder(cancel)
    assert again.order.status == pb.ORDER_STATUS_CANCELLED


async def confirmed_order(rig: Rig) -> tuple[str, str]:
    buyer = customer()
    order_id = await place(rig, buyer, rig.carts.add(buyer))
    await rig.stub.CalculateTax(pb.CalculateTaxRequest(idempotency_key="k" * 8, **ids(order_id)))
    await rig.stub.ConfirmOrder(
        pb.ConfirmOrderRequest(
            idempotency_key="k" * 8,
            reservation_id=ids_pb2.ReservationId(value=str(uuid.uuid4())),
            payment_id=ids_pb2.PaymentId(value=str(uuid.uuid4())),
            **ids(order_id),
        )
    )
    return buyer, order_id


@pytest.mark.parametrize("captured", [False, True])
async def test_cancelling_a_confirmed_order_decides_the_state_and_leaves_money_to_payment(
    rig: Rig, captured: bool
) -> None:
    buyer, order_id = await confirmed_order(rig)
    oid = uuid.UUID(order_id)
    rig.payments.payments[oid] = PaymentSummary(
        "CAPTURED" if captured else "AUTHORIZED", usd(2681), usd(2681 if captured else 0), usd(0)
    )
    cancel = pb.CancelOrderRequest(
        idempotency_key=new_key(), customer_id=ids_pb2.CustomerId(value=buyer), **ids(order_id)
    )
    order = (await rig.stub.CancelOrder(cancel)).order
    again = (await rig.stub.CancelOrder(cancel)).order

    assert order.status == again.status == pb.ORDER_STATUS_CANCELLED
    assert order.failure_reason == pb.FAILURE_REASON_CUSTOMER_CANCELLED
    # The money is settled by the payment service from OrderCancelled (the end-to-end tests
    # show the PSP's side); checkout's port can no longer move it.
    cancelled = [
        e for e in await outbox_events(rig.engine, order_id) if e.event_type.endswith("Cancelled")
    ]
    assert len(cancelled) == 1
    event = order_events_pb2.OrderCancelled()
    cancelled[0].payload.Unpack(event)
    assert event.previous_status == pb.ORDER_STATUS_CONFIRMED


async def requested_shipments(
    rig: Rig, order_id: str
) -> list[shipping_events_pb2.ShipmentRequested]:
    found = []
    for envelope in await outbox_events(rig.engine, order_id):
        if envelope.event_type.endswith("ShipmentRequested"):
            requested = shipping_events_pb2.ShipmentRequested()
            envelope.payload.Unpack(requested)
            found.append(requested)
    return found


def mark_shipped(order_id: str, requested: shipping_events_pb2.ShipmentRequested) -> Any:
    return pb.MarkOrderShippedRequest(
        idempotency_key=f"{requested.shipment_id.value}:shipped",
        shipment=pb.Shipment(
            shipment_id=requested.shipment_id,
            merchant_id=requested.merchant_id,
            carrier="UPS",
            tracking_number="1Z",
        ),
        **ids(order_id),
    )


async def order_of(rig: Rig, buyer: str, order_id: str) -> pb.Order:
    request = pb.GetOrderRequest(customer_id=ids_pb2.CustomerId(value=buyer), **ids(order_id))
    return (await rig.stub.GetOrder(request)).order


async def test_a_partly_shipped_order_cannot_be_cancelled_and_ships_whole(
    rig: Rig,
) -> None:
    buyer, order_id = await confirmed_order(rig)
    oid = uuid.UUID(order_id)
    rig.payments.payments[oid] = PaymentSummary("AUTHORIZED", usd(2681), usd(0), usd(0))
    first, *rest = await requested_shipments(rig, order_id)
    assert rest, "the order needs two merchants for a partial shipment"
    await rig.stub.MarkOrderShipped(mark_shipped(order_id, first))

    error = await refusal(
        rig.stub.CancelOrder(
            pb.CancelOrderRequest(
                idempotency_key=new_key(),
                customer_id=ids_pb2.CustomerId(value=buyer),
                **ids(order_id),
            )
        )
    )

    assert isinstance(error, errors.FailedPrecondition)
    for requested in rest:  # the rest still ships
        await rig.stub.MarkOrderShipped(mark_shipped(order_id, requested))
    assert (await order_of(rig, buyer, order_id)).status == pb.ORDER_STATUS_SHIPPED


async def test_a_cancel_racing_shipping_either_cancels_unshipped_or_is_refused(rig: Rig) -> None:
    confirmed = [await confirmed_order(rig) for _ in range(12)]
    for _, order_id in confirmed:
        rig.payments.payments[uuid.UUID(order_id)] = PaymentSummary(
            "AUTHORIZED", usd(2681), usd(0), usd(0)
        )

    async def ship(order_id: str) -> None:
        for requested in await requested_shipments(rig, order_id):
            with contextlib.suppress(grpc.aio.AioRpcError):  # refused once cancelled
                await rig.stub.MarkOrderShipped(mark_shipped(order_id, requested))

    async def cancel(buyer: str, order_id: str) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):  # refused once (partly) shipped
            await rig.stub.CancelOrder(
                pb.CancelOrderRequest(
                    idempotency_key=new_key(),
                    customer_id=ids_pb2.CustomerId(value=buyer),
                    **ids(order_id),
                )
            )

    await asyncio.gather(
        *(ship(order_id) for _, order_id in confirmed),
        *(cancel(buyer, order_id) for buyer, order_id in confirmed),
    )

    outcomes = []
    for buyer, order_id in confirmed:
        order = await order_of(rig, buyer, order_id)
        outcomes.append(order.status)
        if order.status == pb.ORDER_STATUS_CANCELLED:
            assert not any(s.HasField("shipped_at") for s in order.shipments), order_id
        else:
            assert order.status == pb.ORDER_STATUS_SHIPPED, order_id
    assert set(outcomes) <= {pb.ORDER_STATUS_CANCELLED, pb.ORDER_STATUS_SHIPPED}


async def test_a_shipped_order_cannot_be_cancelled(rig: Rig) -> None:
    buyer, order_id = await confirmed_order(rig)
    shipments = [
        e for e in await outbox_events(rig.engine, order_id) if e.event_type.endswith("Requested")
    ]
    for envelope in shipments:
        requested = shipping_events_pb2.ShipmentRequested()
        envelope.payload.Unpack(requested)
        await rig.stub.MarkOrderShipped(
            pb.MarkOrderShippedRequest(
                idempotency_key="k" * 8,
                shipment=pb.Shipment(
                    shipment_id=requested.shipment_id,
                    merchant_id=requested.merchant_id,
                    carrier="UPS",
                    tracking_number="1Z",
                ),
                **ids(order_id),
            )
        )
    error = await refusal(
        rig.stub.CancelOrder(
            pb.CancelOrderRequest(
                idempotency_key=new_key(),
                customer_id=ids_pb2.CustomerId(value=buyer),
                **ids(order_id),
            )
        )
    )
    assert isinstance(error, errors.FailedPrecondition)


# --- background duties --------------------------------------------------------------------


async def test_the_completer_starts_a_saga_whose_start_was_lost(rig: Rig) -> None:
    buyer = customer()
    cart_id = rig.carts.add(buyer)
    rig.saga.fail = True  # the process "dies" between the commit and StartExecution
    order_id = await place(rig, buyer, cart_id)
    assert order_id not in rig.saga.started
    assert await saga_started_at(rig.engine, order_id) is None
    rig.saga.fail = False

    settings = rig.settings.model_copy(
        update={"completer_interval_seconds": 0.05, "completer_grace_seconds": 0}
    )
    completer = checkout.background_loops(settings, rig.deps)[0]
    task = asyncio.create_task(completer())
    try:
        started_at = await eventually(
            lambda: saga_started_at(rig.engine, order_id), within=WITHIN, interval=0.05
        )
    finally:
        task.cancel()
    assert started_at is not None
    assert rig.saga.started[order_id]["order_id"] == order_id
    assert (cart_id, uuid.UUID(order_id)) in rig.carts.checked_out
    # Recorded as started, it is not started again.
    calls = rig.saga.calls
    assert await housekeeping.complete_stranded(older_than=timedelta(0), deps=rig.deps) == 0
    assert rig.saga.calls == calls


async def test_orders_past_the_saga_deadline_are_failed_with_timeout(rig: Rig) -> None:
    buyer = customer()
    stale = await place(rig, buyer, rig.carts.add(buyer))
    fresh = await place(rig, buyer, rig.carts.add(buyer))
    async with rig.engine.begin() as connection:
        await connection.execute(
            update(tables.orders)
            .where(tables.orders.c.order_id == uuid.UUID(stale))
            .values(created_at=func.now() - timedelta(hours=1))
        )
    assert await housekeeping.fail_overdue(older_than=timedelta(minutes=30), deps=rig.deps) >= 1
    status = "SELECT status, failure_reason FROM checkout.orders WHERE order_id = :o"
    async with rig.engine.connect() as connection:
        stale_row = (await connection.execute(text(status), {"o": uuid.UUID(stale)})).one()
        fresh_row = (await connection.execute(text(status), {"o": uuid.UUID(fresh)})).one()
    assert tuple(stale_row) == ("CANCELLED", "TIMEOUT")
    assert tuple(fresh_row) == ("PENDING", None)


async def test_keys_older_than_the_retention_are_reaped(rig: Rig) -> None:
    buyer, old_key, new = customer(), new_key(), new_key()
    await rig.stub.PlaceOrder(place_request(buyer, rig.carts.add(buyer), old_key))
    await rig.stub.PlaceOrder(place_request(buyer, rig.carts.add(buyer), new))
    async with rig.engine.begin() as connection:
        await connection.execute(
            update(tables.idempotency_keys)
            .where(tables.idempotency_keys.c.key == old_key)
            .values(created_at=func.now() - timedelta(hours=25))
        )
    reaped = await housekeeping.reap_idempotency_keys(
        retention=timedelta(hours=24), batch=1, deps=rig.deps
    )
    assert reaped >= 1
    assert await key_state(rig.engine, buyer, old_key) is None
    assert await key_state(rig.engine, buyer, new) == "COMPLETED"
    assert rig.settings.idempotency_retention_hours == 24
