"""Checkout's use cases against a fake unit of work: in-memory order and idempotency
repositories with transaction semantics (a use case's writes land on a clean exit and vanish
on an error), fakes of the cart and payment ports, and a saga starter that records what it
was asked to start. The rules that need no database are proven here, in milliseconds; the
integration tests prove the PostgreSQL repositories keep them under real races."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.message import Message

from marketplace.events.v1 import envelope_pb2, order_events_pb2
from marketplace_platform import errors
from marketplace_platform.money import Money
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.saga import SagaStarter, StartedExecution
from services.checkout.adapters import tables
from services.checkout.domain import tax
from services.checkout.domain.errors import (
    CancelRequested,
    CartAlreadyOrdered,
    CartNotCheckoutable,
    IllegalTransition,
)
from services.checkout.domain.idempotency import IdempotencyRecord, PlacedOrder, RecordState
from services.checkout.domain.order import (
    FailureReason,
    Order,
    OrderLine,
    OrderStatus,
    ShippingAddress,
    shipment_id_for,
)
from services.checkout.service_layer import events, housekeeping, orders, placement, steps
from services.checkout.service_layer.deps import CheckoutDeps
from services.checkout.service_layer.ports import (
    CartPort,
    CartStatus,
    IdempotencyRepositoryPort,
    OrderRepositoryPort,
    PaymentPort,
    PaymentSummary,
    PricedCart,
    PricingProblem,
)
from tests.support.in_memory import InMemoryUnitOfWork, checked_envelope

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ADDRESS = ShippingAddress("Ada Lovelace", "1 Main St", "Springfield", "12345", "US")
LEASE = timedelta(seconds=30)

# --- the fake database and unit of work ----------------------------------------------------


@dataclass
class Tables:
    """Checkout's rows: orders, which of them have a saga, idempotency records, the outbox."""

    orders: dict[uuid.UUID, Order] = field(default_factory=dict)
    saga_started: set[uuid.UUID] = field(default_factory=set)
    keys: dict[tuple[str, str], IdempotencyRecord] = field(default_factory=dict)
    key_created: dict[tuple[str, str], datetime] = field(default_factory=dict)
    outbox: list[envelope_pb2.EventEnvelope] = field(default_factory=list)


@dataclass
class FakeDatabase:
    """The committed state, a clock every lease and age is measured by, and a commit count."""

    committed: Tables = field(default_factory=Tables)
    now: datetime = START
    version: int = 0

    def events(self, order_id: uuid.UUID | None = None) -> list[str]:
        """The committed event types (of one order when given), in outbox order."""
        return [
            e.event_type.removeprefix("marketplace.events.v1.")
            for e in self.committed.outbox
            if order_id is None or e.aggregate_id == str(order_id)
        ]


class FakeOrderRepository(OrderRepositoryPort):
    """Orders in a transaction's working copy; reads hand out copies, as rows would be."""

    def __init__(self, rows: Tables, uow: FakeUnitOfWork) -> None:
        self._rows = rows
        self._uow = uow

    async def add(self, order: Order) -> bool:
        if order.order_id in self._rows.orders or any(
            o.cart_id == order.cart_id for o in self._rows.orders.values()
        ):
            return False  # the primary key and the unique cart_id constraint
        order.created_at = order.updated_at = self._uow.db.now
        self._write(order)
        return True

    async def order_id_for_cart(self, cart_id: uuid.UUID) -> uuid.UUID | None:
        return next((o.order_id for o in self._rows.orders.values() if o.cart_id == cart_id), None)

    async def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        found = self._rows.orders.get(order_id)
        return None if found is None else copy.deepcopy(found)

    async def list_for_customer(
        self, customer_id: str, *, before: uuid.UUID | None, limit: int
    ) -> list[Order]:
        def newest_first(order: Order) -> tuple[datetime, uuid.UUID]:
            return (order.created_at or START, order.order_id)

        mine = sorted(
            (o for o in self._rows.orders.values() if o.customer_id == customer_id),
            key=newest_first,
            reverse=True,
        )
        after = None if before is None else newest_first(self._rows.orders[before])
        return [copy.deepcopy(o) for o in mine if after is None or newest_first(o) < after][:limit]

    async def save(self, order: Order) -> None:
        stored = self._rows.orders[order.order_id]
        assert stored.lines == order.lines, "lines never change after placement"
        order.updated_at = self._uow.db.now
        self._write(order)

    async def mark_saga_started(self, order_id: uuid.UUID) -> None:
        self._rows.saga_started.add(order_id)
        self._uow.wrote = True

    async def without_saga(self, *, older_than: timedelta, limit: int) -> list[Order]:
        return [
            copy.deepcopy(o)
            for o in self._pending_before(older_than)
            if o.order_id not in self._rows.saga_started
        ][:limit]

    async def pending_since(self, *, older_than: timedelta, limit: int) -> list[uuid.UUID]:
        return [o.order_id for o in self._pending_before(older_than)][:limit]

    def _pending_before(self, older_than: timedelta) -> list[Order]:
        cutoff = self._uow.db.now - older_than
        return sorted(
            (
                o
                for o in self._rows.orders.values()
                if o.status is OrderStatus.PENDING and o.created_at and o.created_at < cutoff
            ),
            key=lambda o: o.created_at or START,
        )

    def _write(self, order: Order) -> None:
        self._rows.orders[order.order_id] = copy.deepcopy(order)
        self._uow.wrote = True


class FakeIdempotencyRepository(IdempotencyRepositoryPort):
    """Idempotency records in a transaction's working copy, on the fake database's clock."""

    def __init__(self, rows: Tables, uow: FakeUnitOfWork) -> None:
        self._rows = rows
        self._uow = uow

    async def now(self) -> datetime:
        return self._uow.db.now

    async def claim(
        self, *, customer_id: str, key: str, fingerprint: str, lease: timedelta
    ) -> bool:
        if (customer_id, key) in self._rows.keys:
            return False
        self._rows.keys[customer_id, key] = IdempotencyRecord(
            customer_id, key, fingerprint, RecordState.STARTED, self._uow.db.now + lease
        )
        self._rows.key_created[customer_id, key] = self._uow.db.now
        self._uow.wrote = True
        return True

    async def get(self, customer_id: str, key: str) -> IdempotencyRecord | None:
        return self._rows.keys.get((customer_id, key))

    async def extend_lease(self, customer_id: str, key: str, lease: timedelta) -> None:
        self._set(customer_id, key, locked_until=self._uow.db.now + lease)

    async def release_lease(self, customer_id: str, key: str) -> None:
        record = self._rows.keys.get((customer_id, key))
        if record is not None and record.state is RecordState.STARTED:
            self._set(customer_id, key, locked_until=self._uow.db.now)

    async def complete(self, customer_id: str, key: str, response: PlacedOrder) -> None:
        self._set(customer_id, key, state=RecordState.COMPLETED, response=response)

    async def reap(self, *, older_than: timedelta, limit: int) -> int:
        cutoff = self._uow.db.now - older_than
        oldest = sorted(
            (created, k) for k, created in self._rows.key_created.items() if created < cutoff
        )[:limit]
        for _, k in oldest:
            del self._rows.keys[k], self._rows.key_created[k]
        self._uow.wrote = self._uow.wrote or bool(oldest)
        return len(oldest)

    def _set(self, customer_id: str, key: str, **values: Any) -> None:
        record = self._rows.keys.get((customer_id, key))
        if record is not None:  # an UPDATE of no row changes nothing
            self._rows.keys[customer_id, key] = replace(record, **values)
            self._uow.wrote = True


class FakeUnitOfWork(InMemoryUnitOfWork):
    """An AbstractCheckoutUnitOfWork on the fake database: a working copy taken on entry,
    committed on a clean exit, dropped on an error. Two transactions writing over each other
    fail loudly (the fake does not model row locks, so it refuses to pretend)."""

    def __init__(self, db: FakeDatabase) -> None:
        self.db = db
        self._outbox = OutboxWriter(tables.outbox, producer="checkout")
        self.wrote = False

    def begin(self) -> None:
        self._began_at = self.db.version
        self._rows = copy.deepcopy(self.db.committed)
        self.wrote = False
        self.orders = FakeOrderRepository(self._rows, self)
        self.keys = FakeIdempotencyRepository(self._rows, self)

    def commit(self) -> None:
        if not self.wrote:
            return
        assert self.db.version == self._began_at, "overlapping writing transactions"
        self.db.committed = self._rows
        self.db.version += 1

    async def publish(
        self, payload: Message, *, aggregate_type: str, aggregate_id: str
    ) -> envelope_pb2.EventEnvelope:
        envelope = checked_envelope(
            self._outbox, payload, aggregate_type=aggregate_type, aggregate_id=aggregate_id
        )
        self._rows.outbox.append(envelope)
        self.wrote = True
        return envelope


# --- fakes of the other systems ------------------------------------------------------------


@dataclass
class FakeCart:
    customer_id: str
    lines: tuple[OrderLine, ...]
    problems: tuple[PricingProblem, ...] = ()
    order_id: uuid.UUID | None = None


class FakeCartPort(CartPort):
    """Carts in memory, priced from their lines; a cart stays frozen by its first order.
    `hold_next` keeps the next PriceCart answer in flight until the event is set."""

    def __init__(self) -> None:
        self.carts: dict[uuid.UUID, FakeCart] = {}
        self.priced = 0
        self.hold_next: asyncio.Event | None = None
        self.checked_out: list[tuple[uuid.UUID, uuid.UUID]] = []

    def add(self, customer_id: str, *lines: OrderLine) -> uuid.UUID:
        cart_id = uuid.uuid4()
        self.carts[cart_id] = FakeCart(customer_id, lines or DEFAULT_LINES)
        return cart_id

    async def price_cart(self, *, cart_id: uuid.UUID, customer_id: str) -> PricedCart:
        self.priced += 1
        hold, self.hold_next = self.hold_next, None
        cart = self.carts.get(cart_id)
        if cart is None or cart.customer_id != customer_id:
            raise errors.NotFound(f"no cart {cart_id}")
        subtotal = Money.zero("USD")
        for line in cart.lines:
            subtotal = subtotal + line.line_total
        status = CartStatus.OPEN if cart.order_id is None else CartStatus.CHECKED_OUT
        answer = PricedCart(
            cart_id, customer_id, status, cart.lines, subtotal, cart.problems, cart.order_id
        )
        if hold is not None:
            await hold.wait()
        return answer

    async def mark_checked_out(
        self, *, cart_id: uuid.UUID, customer_id: str, order_id: uuid.UUID
    ) -> None:
        self.checked_out.append((cart_id, order_id))  # every request, even a refused one
        cart = self.carts[cart_id]
        if cart.order_id not in (None, order_id):
            raise errors.FailedPrecondition("checked out by another order")
        cart.order_id = order_id


@dataclass
class FakePaymentPort(PaymentPort):
    """Payment summaries in memory; `down` makes the payment service unreachable."""

    payments: dict[uuid.UUID, PaymentSummary] = field(default_factory=dict)
    down: bool = False

    async def summary(self, order_id: uuid.UUID) -> PaymentSummary | None:
        if self.down:
            raise errors.DependencyUnavailable("payment unreachable")
        return self.payments.get(order_id)


class RecordingSagaStarter(SagaStarter):
    """Records every start; one execution per name, as Step Functions keeps them."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.executions: dict[str, dict[str, Any]] = {}
        self.fail = False

    async def start_execution(self, *, name: str, payload: Mapping[str, Any]) -> StartedExecution:
        self.calls.append(name)
        if self.fail:
            raise errors.DependencyUnavailable("saga engine unreachable")
        existed = name in self.executions
        self.executions.setdefault(name, dict(payload))
        return StartedExecution(f"exec-{name}", name, already_existed=existed)


def usd(amount_minor: int) -> Money:
    return Money(amount_minor, "USD")


DEFAULT_LINES = (
    OrderLine("MUG-1", "acme", "Mug", 2, usd(500)),
    OrderLine("TEE-1", "globex", "Tee", 1, usd(1500)),
)


@dataclass
class Shop:
    db: FakeDatabase
    carts: FakeCartPort
    payments: FakePaymentPort
    saga: RecordingSagaStarter
    deps: CheckoutDeps

    async def order(self, order_id: uuid.UUID) -> Order:
        async with self.deps.unit_of_work() as uow:
            found = await uow.orders.get(order_id)
        assert found is not None
        return found


@pytest.fixture
def shop() -> Shop:
    db, carts, payments, saga = (
        FakeDatabase(),
        FakeCartPort(),
        FakePaymentPort(),
        RecordingSagaStarter(),
    )
    deps = CheckoutDeps(
        unit_of_work=lambda: FakeUnitOfWork(db),
        carts=carts,
        payments=payments,
        saga=saga,
        lease=LEASE,
    )
    return Shop(db, carts, payments, saga, deps)


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until the condition holds."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    pytest.fail("the condition never held")


def place_command(
    customer_id: str, cart_id: uuid.UUID, *, key: str | None = None, method: str = "pm_card_visa"
) -> placement.PlaceOrder:
    return placement.PlaceOrder(
        idempotency_key=key or f"key-{uuid.uuid4()}",
        customer_id=customer_id,
        cart_id=cart_id,
        payment_method=method,
        shipping_address=ADDRESS,
    )


async def placed(shop: Shop, customer_id: str = "ada", *lines: OrderLine) -> uuid.UUID:
    cart_id = shop.carts.add(customer_id, *lines)
    result = await placement.place_order(place_command(customer_id, cart_id), deps=shop.deps)
    return result.order_id


async def confirmed(shop: Shop) -> Order:
    order_id = await placed(shop)
    await steps.calculate_tax(order_id, deps=shop.deps)
    return await steps.confirm_order(
        order_id, reservation_id=uuid.uuid4(), payment_id=uuid.uuid4(), deps=shop.deps
    )


# --- the fake itself -----------------------------------------------------------------------


async def test_the_fake_unit_of_work_commits_a_clean_exit_and_drops_an_error(shop: Shop) -> None:
    order_id = await placed(shop)

    async def cancel_then(failure: Exception | None) -> None:
        async with shop.deps.unit_of_work() as uow:
            order = await uow.orders.get(order_id)
            assert order is not None
            assert order.request_cancel()
            await uow.orders.save(order)
            if failure is not None:
                raise failure

    with pytest.raises(RuntimeError):
        await cancel_then(RuntimeError("rolled back"))
    assert not (await shop.order(order_id)).cancel_requested
    # Unsaved changes to a loaded order are not written either.
    async with shop.deps.unit_of_work() as uow:
        order = await uow.orders.get(order_id)
        assert order is not None
        assert order.request_cancel()
    assert not (await shop.order(order_id)).cancel_requested
    await cancel_then(None)
    assert (await shop.order(order_id)).cancel_requested


# --- PlaceOrder ----------------------------------------------------------------------------


async def test_placing_twice_with_one_key_returns_the_same_order_and_starts_one_saga(
    shop: Shop,
) -> None:
    cart_id = shop.carts.add("ada")
    command = place_command("ada", cart_id)

    first = await placement.place_order(command, deps=shop.deps)
    again = await placement.place_order(command, deps=shop.deps)

    assert (first.status, first.replayed) == (OrderStatus.PENDING, False)
    assert (again.order_id, again.status, again.replayed) == (first.order_id, first.status, True)
    assert list(shop.db.committed.orders) == [first.order_id]
    assert shop.saga.calls == [str(first.order_id)]
    assert shop.carts.checked_out == [(cart_id, first.order_id)]
    assert shop.carts.priced == 1  # the replay answered from the key, without the cart
    assert shop.db.events() == ["OrderPending"]
    assert shop.db.committed.saga_started == {first.order_id}
    record = shop.db.committed.keys["ada", command.idempotency_key]
    assert (record.state, record.response) == (
        RecordState.COMPLETED,
        PlacedOrder(first.order_id, "PENDING"),
    )


async def test_the_same_key_with_another_cart_is_refused(shop: Shop) -> None:
    first = await placement.place_order(
        place_command("ada", shop.carts.add("ada"), key="k"), deps=shop.deps
    )
    other_cart = shop.carts.add("ada")

    with pytest.raises(errors.IdempotencyKeyReused):
        await placement.place_order(place_command("ada", other_cart, key="k"), deps=shop.deps)
    with pytest.raises(errors.IdempotencyKeyReused):  # another payment method: another request
        await placement.place_order(
            place_command("ada", other_cart, key="k", method="pm_card_mastercard"), deps=shop.deps
        )

    assert list(shop.db.committed.orders) == [first.order_id]
    assert shop.saga.calls == [str(first.order_id)]
    assert shop.carts.carts[other_cart].order_id is None
    # Keys belong to their customer: another customer's "k" is a new request.
    theirs = await placement.place_order(
        place_command("bob", shop.carts.add("bob"), key="k"), deps=shop.deps
    )
    assert not theirs.replayed
    assert theirs.order_id != first.order_id


async def test_an_order_is_priced_from_the_cart_port_and_its_totals_add_up(shop: Shop) -> None:
    lines = (
        OrderLine("MUG-1", "acme", "Mug", 3, usd(1299)),
        OrderLine("PEN-9", "acme", "Pen", 7, usd(85)),
        OrderLine("TEE-1", "globex", "Tee", 1, usd(2500)),
    )
    cart_id = shop.carts.add("ada", *lines)
    priced = await shop.carts.price_cart(cart_id=cart_id, customer_id="ada")
    result = await placement.place_order(place_command("ada", cart_id), deps=shop.deps)
    # The cart's prices change after placement: the order keeps the ones it was priced with.
    shop.carts.carts[cart_id].lines = (OrderLine("MUG-1", "acme", "Mug", 3, usd(1)),)

    order = await shop.order(result.order_id)
    assert order.lines == lines
    assert order.subtotal == priced.subtotal == usd(3 * 1299 + 7 * 85 + 2500)
    assert shop.saga.executions[str(order.order_id)]["subtotal"] == {
        "amount_minor": 3 * 1299 + 7 * 85 + 2500,
        "currency": "USD",
    }
    taxed = await steps.calculate_tax(order.order_id, deps=shop.deps)
    assert taxed.tax == tax.tax_on(order.subtotal, "US") == usd(507)  # 7.25% of 6992, half up
    assert taxed.total == order.subtotal + taxed.tax
    # A repeat of the step keeps the first figure.
    assert await steps.calculate_tax(order.order_id, deps=shop.deps) == taxed
    assert (await shop.order(order.order_id)).total == taxed.total


async def test_a_cart_that_cannot_be_checked_out_is_refused_and_frees_its_key(
    shop: Shop,
) -> None:
    cart_id = shop.carts.add("ada")
    shop.carts.carts[cart_id].problems = (PricingProblem("OUT_OF_STOCK", "sold out", "MUG-1"),)
    command = place_command("ada", cart_id)

    with pytest.raises(CartNotCheckoutable) as refused:
        await placement.place_order(command, deps=shop.deps)
    assert refused.value.reason == "CART_NOT_CHECKOUTABLE"
    assert refused.value.metadata["problems"] == "OUT_OF_STOCK"
    assert shop.db.committed.orders == {}
    assert shop.saga.calls == []
    # The lease was given back: the retry runs at once instead of being told it is in flight.
    with pytest.raises(CartNotCheckoutable):
        await placement.place_order(command, deps=shop.deps)
    assert shop.carts.priced == 2


async def test_a_cart_already_ordered_names_the_order(shop: Shop) -> None:
    cart_id = shop.carts.add("ada")
    first = await placement.place_order(place_command("ada", cart_id), deps=shop.deps)

    with pytest.raises(CartAlreadyOrdered) as refused:
        await placement.place_order(place_command("ada", cart_id), deps=shop.deps)

    assert refused.value.metadata["existing_order_id"] == str(first.order_id)
    assert list(shop.db.committed.orders) == [first.order_id]


async def test_the_same_purchase_after_its_key_was_forgotten_is_answered_as_a_replay(
    shop: Shop,
) -> None:
    cart_id = shop.carts.add("ada")
    command = place_command("ada", cart_id, key="k")
    first = await placement.place_order(command, deps=shop.deps)
    shop.db.committed.keys.clear()  # reaped (or never replicated): the order is still there

    again = await placement.place_order(command, deps=shop.deps)

    assert (again.order_id, again.status, again.replayed) == (first.order_id, first.status, True)
    assert list(shop.db.committed.orders) == [first.order_id]
    assert shop.saga.calls == [str(first.order_id)]
    # The answer is stored under the key again: the next repeat replays it from there.
    stored = shop.db.committed.keys[("ada", "k")].response
    assert stored is not None
    assert stored.order_id == first.order_id


async def test_a_cart_checked_out_by_the_order_a_request_names_places_that_order_again(
    shop: Shop,
) -> None:
    cart_id = shop.carts.add("ada")
    command = place_command("ada", cart_id, key="k")
    first = await placement.place_order(command, deps=shop.deps)
    # Another Region's database, behind this one: the cart is checked out by the order, the
    # order and its key never arrived.
    shop.db.committed.orders.clear()
    shop.db.committed.keys.clear()

    again = await placement.place_order(command, deps=shop.deps)

    assert (again.order_id, again.replayed) == (first.order_id, False)
    assert list(shop.db.committed.orders) == [first.order_id]
    # The saga is started again under the same name (an execution of that name is the same).
    assert shop.saga.calls == [str(first.order_id)] * 2
    with pytest.raises(CartAlreadyOrdered):  # another key is another purchase: refused
        await placement.place_order(place_command("ada", cart_id, key="other"), deps=shop.deps)


async def test_a_request_in_flight_holds_its_key_until_its_lease_runs_out(shop: Shop) -> None:
    cart_id = shop.carts.add("ada")
    command = place_command("ada", cart_id)
    release = asyncio.Event()
    shop.carts.hold_next = release
    first = asyncio.create_task(placement.place_order(command, deps=shop.deps))
    await until(lambda: shop.carts.priced == 1)  # the first request's price is on its way

    with pytest.raises(errors.RequestInFlight):
        await placement.place_order(command, deps=shop.deps)
    assert shop.carts.priced == 1

    shop.db.now += LEASE  # the first request's lease ran out: a retry takes over and finishes
    retry = await placement.place_order(command, deps=shop.deps)
    release.set()
    late = await first

    assert not retry.replayed
    assert (late.order_id, late.replayed) == (retry.order_id, True)
    assert list(shop.db.committed.orders) == [retry.order_id]
    assert shop.saga.calls == [str(retry.order_id)]
    assert shop.carts.checked_out == [(cart_id, retry.order_id)]  # the late one froze nothing


# --- reads and cancellation ----------------------------------------------------------------


async def test_cancelling_a_pending_order_records_the_request(shop: Shop) -> None:
    order_id = await placed(shop)
    summary = PaymentSummary("AUTHORIZED", usd(2681), usd(0), usd(0))
    shop.payments.payments[order_id] = summary

    view = await orders.cancel_order(order_id, "ada", deps=shop.deps)

    assert (view.order.status, view.order.cancel_requested, view.payment) == (
        OrderStatus.PENDING,
        True,
        summary,
    )
    stored = await shop.order(order_id)
    assert (stored.status, stored.cancel_requested) == (OrderStatus.PENDING, True)
    assert shop.db.events(order_id) == ["OrderPending"]  # the saga compensates; no event yet
    # Asking again changes nothing.
    again = await orders.cancel_order(order_id, "ada", deps=shop.deps)
    assert again.order.cancel_requested
    assert shop.db.events(order_id) == ["OrderPending"]


async def test_cancelling_a_confirmed_order_cancels_it_with_one_event(shop: Shop) -> None:
    order = await confirmed(shop)
    shop.payments.down = True  # the read degrades: the order without its payment summary

    view = await orders.cancel_order(order.order_id, "ada", deps=shop.deps)
    await orders.cancel_order(order.order_id, "ada", deps=shop.deps)

    assert (view.order.status, view.order.failure_reason, view.payment) == (
        OrderStatus.CANCELLED,
        FailureReason.CUSTOMER_CANCELLED,
        None,
    )
    assert shop.db.events(order.order_id).count("OrderCancelled") == 1
    cancelled = order_events_pb2.OrderCancelled()
    next(
        e for e in shop.db.committed.outbox if e.event_type.endswith("OrderCancelled")
    ).payload.Unpack(cancelled)
    assert view.order.total == usd(2681)  # 2500 and 7.25% tax
    assert (cancelled.total.amount_minor, cancelled.previous_status) == (
        2681,
        events.status(OrderStatus.CONFIRMED),
    )


async def test_cancelling_a_shipped_order_is_refused(shop: Shop) -> None:
    order = await confirmed(shop)
    for shipment in order.shipments:
        await steps.mark_shipped(
            steps.MarkShipped(
                order_id=order.order_id,
                shipment_id=shipment.shipment_id,
                merchant_id=shipment.merchant_id,
                carrier="UPS",
                tracking_number="1Z",
                shipped_at=shop.db.now,
            ),
            deps=shop.deps,
        )
    assert (await shop.order(order.order_id)).status is OrderStatus.SHIPPED
    events_before = shop.db.events(order.order_id)

    with pytest.raises(IllegalTransition):
        await orders.cancel_order(order.order_id, "ada", deps=shop.deps)

    stored = await shop.order(order.order_id)
    assert (stored.status, stored.failure_reason) == (OrderStatus.SHIPPED, None)
    assert shop.db.events(order.order_id) == events_before


async def test_another_customers_order_is_not_found(shop: Shop) -> None:
    order_id = await placed(shop)
    with pytest.raises(errors.NotFound):
        await orders.get_order(order_id, "mallory", deps=shop.deps)
    with pytest.raises(errors.NotFound):
        await orders.cancel_order(order_id, "mallory", deps=shop.deps)
    assert not (await shop.order(order_id)).cancel_requested


async def test_orders_are_listed_newest_first_a_page_at_a_time(shop: Shop) -> None:
    mine = []
    for _ in range(5):  # newest by placement time: order ids are derived, not time-ordered
        mine.append(await placed(shop))
        shop.db.now += timedelta(seconds=1)
    await placed(shop, "bob")
    seen: list[uuid.UUID] = []
    token = ""
    while True:
        page, token = await orders.list_orders("ada", page_size=2, page_token=token, deps=shop.deps)
        seen += [o.order_id for o in page]
        if not token:
            break
    assert seen == list(reversed(mine))


# --- the saga's steps ----------------------------------------------------------------------


async def test_confirming_after_a_cancel_request_is_refused_with_cancel_requested(
    shop: Shop,
) -> None:
    order_id = await placed(shop)
    await steps.calculate_tax(order_id, deps=shop.deps)
    await orders.cancel_order(order_id, "ada", deps=shop.deps)

    with pytest.raises(CancelRequested) as refused:
        await steps.confirm_order(
            order_id, reservation_id=uuid.uuid4(), payment_id=uuid.uuid4(), deps=shop.deps
        )

    assert refused.value.reason == "CANCEL_REQUESTED"
    stored = await shop.order(order_id)
    assert (stored.status, stored.reservation_id, stored.shipments) == (
        OrderStatus.PENDING,
        None,
        (),
    )
    assert "OrderPlaced" not in shop.db.events(order_id)
    # The saga compensates and fails the order as the customer asked.
    failed = await steps.fail_order(
        order_id, reason=FailureReason.CUSTOMER_CANCELLED, detail="", deps=shop.deps
    )
    assert (failed.status, failed.failure_reason) == (
        OrderStatus.CANCELLED,
        FailureReason.CUSTOMER_CANCELLED,
    )
    assert shop.db.events(order_id) == ["OrderPending", "OrderCancelled"]


async def test_confirming_writes_the_order_placed_and_one_shipment_per_merchant(
    shop: Shop,
) -> None:
    order = await confirmed(shop)
    assert order.reservation_id is not None
    assert order.payment_id is not None
    again = await steps.confirm_order(
        order.order_id,
        reservation_id=order.reservation_id,
        payment_id=order.payment_id,
        deps=shop.deps,
    )
    assert order.status is OrderStatus.CONFIRMED
    assert again.shipments == order.shipments
    assert [s.merchant_id for s in order.shipments] == ["acme", "globex"]
    # Named by the order and the merchant: confirmed again elsewhere, the same parcels.
    assert [s.shipment_id for s in order.shipments] == [
        shipment_id_for(order.order_id, "acme"),
        shipment_id_for(order.order_id, "globex"),
    ]
    assert shop.db.events(order.order_id) == [
        "OrderPending",
        "OrderPlaced",
        "ShipmentRequested",
        "ShipmentRequested",
    ]


async def test_a_step_on_an_unknown_order_is_not_found(shop: Shop) -> None:
    with pytest.raises(errors.NotFound):
        await steps.assess_fraud(uuid.uuid4(), deps=shop.deps)


# --- background duties --------------------------------------------------------------------


async def test_the_completer_starts_the_saga_whose_start_was_lost(shop: Shop) -> None:
    shop.saga.fail = True
    order_id = await placed(shop)
    assert shop.db.committed.saga_started == set()
    shop.saga.fail = False

    grace = timedelta(seconds=5)
    assert await housekeeping.complete_stranded(older_than=grace, deps=shop.deps) == 0  # too new
    shop.db.now += grace * 2
    assert await housekeeping.complete_stranded(older_than=grace, deps=shop.deps) == 1
    assert await housekeeping.complete_stranded(older_than=grace, deps=shop.deps) == 0

    assert shop.db.committed.saga_started == {order_id}
    assert shop.saga.calls == [str(order_id)] * 2  # the lost start, then the completer's


async def test_overdue_orders_fail_with_timeout_and_others_are_left(shop: Shop) -> None:
    stale = await placed(shop)
    done = (await confirmed(shop)).order_id
    shop.db.now += timedelta(minutes=20)
    fresh = await placed(shop)
    shop.db.now += timedelta(minutes=1)

    failed = await housekeeping.fail_overdue(older_than=timedelta(minutes=13), deps=shop.deps)

    assert failed == 1
    assert (await shop.order(stale)).failure_reason is FailureReason.TIMEOUT
    assert (await shop.order(done)).status is OrderStatus.CONFIRMED
    assert (await shop.order(fresh)).status is OrderStatus.PENDING


async def test_keys_past_their_retention_are_reaped_a_batch_at_a_time(shop: Shop) -> None:
    for _ in range(3):
        await placed(shop)
    shop.db.now += timedelta(hours=25)
    kept = await placed(shop)

    reaped = await housekeeping.reap_idempotency_keys(
        retention=timedelta(hours=24), batch=2, deps=shop.deps
    )

    assert reaped == 3
    assert [r.response for r in shop.db.committed.keys.values()] == [PlacedOrder(kept, "PENDING")]
