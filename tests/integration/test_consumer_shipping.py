"""The shipping consumer against real checkout, cart and payment gRPC servers, the PSP simulator
and a carrier that fails half of its calls: a confirmed two-merchant order's events, each
delivered twice, concurrently and shuffled, book one parcel per merchant, publish one
ShipmentCreated each, and take the order to SHIPPED with its payment captured once, in full."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.cart.v1 import cart_service_pb2 as cart_pb
from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.common.v1 import address_pb2, ids_pb2, money_pb2
from marketplace.events.v1 import envelope_pb2, order_events_pb2, shipping_events_pb2
from marketplace.payment.v1 import payment_service_pb2 as payment_pb
from marketplace_platform.db import UnitOfWork, unit_of_work_factory
from marketplace_platform.errors import DependencyUnavailable
from marketplace_platform.grpc_server import RunningServer
from marketplace_platform.ids import new_id
from marketplace_platform.outbox import OutboxWriter
from services.checkout.adapters.tables import outbox as checkout_outbox
from simulators.carrier.simulator import CarrierFaults, CarrierSimulator
from tests.support.psp import RunningPsp
from tests.support.servers import ServiceServers
from tests.support.shop import Shop, shop_of
from workers.consumers import tables
from workers.consumers.consumer import Consumer, Outcome, process
from workers.consumers.shipping import handlers as shipping

if TYPE_CHECKING:
    pass

WITHIN = 30.0


pytestmark = pytest.mark.engine(db_pool_size=20)


@pytest.fixture(scope="module")
async def payment_server(grpc_servers: ServiceServers, psp: RunningPsp) -> RunningServer:
    return await grpc_servers.payment(psp_url=psp.url, psp_timeout_seconds=2.0)


@pytest.fixture(scope="module")
async def cart_server(grpc_servers: ServiceServers, redis_server_url: str) -> RunningServer:
    return await grpc_servers.cart(redis_url=redis_server_url, cart_cache_enabled=False)


@pytest.fixture(scope="module")
async def shop(
    cart_server: RunningServer, checkout_server: RunningServer, payment_server: RunningServer
) -> AsyncIterator[Shop]:
    async with shop_of(cart_server, checkout_server, payment_server, call_timeout=5.0) as stubs:
        yield stubs


@pytest.fixture(scope="module")
def unit_of_work(engine: AsyncEngine) -> Callable[[], UnitOfWork]:
    return unit_of_work_factory(engine, OutboxWriter(tables.outbox, producer=shipping.CONSUMER))


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency="USD")


async def confirmed_order(shop: Shop, merchants: tuple[str, ...]) -> checkout_pb.Order:
    """A cart with one product per merchant, placed, taxed, authorized and confirmed."""
    unique = new_id().hex
    customer = ids_pb2.CustomerId(value=f"customer-{unique[-12:]}")
    created = await shop.cart.CreateCart(
        cart_pb.CreateCartRequest(idempotency_key=f"cart-{unique}", customer_id=customer)
    )
    for n, merchant in enumerate(merchants):
        sku = ids_pb2.Sku(value=f"SHIP-{unique[-10:]}-{n}")
        await shop.cart.UpsertProduct(
            cart_pb.UpsertProductRequest(
                idempotency_key=f"product-{unique}-{n}", sku=sku, name=f"Item {n}",
                price=usd(1250 + n), merchant_id=ids_pb2.MerchantId(value=merchant),
            )
        )  # fmt: skip
        await shop.cart.SetItemQuantity(
            cart_pb.SetItemQuantityRequest(
                idempotency_key=f"line-{unique}-{n}", cart_id=created.cart.cart_id,
                customer_id=customer, sku=sku, quantity=2,
            )
        )  # fmt: skip
    placed = await shop.checkout.PlaceOrder(
        checkout_pb.PlaceOrderRequest(
            idempotency_key=f"place-{unique}", customer_id=customer, cart_id=created.cart.cart_id,
            payment_method="pm_card_visa",
            shipping_address=address_pb2.Address(
                name="Ada Lovelace", line1="1 Main St", city="Springfield", postal_code="12345",
                country="US",
            ),
        )
    )  # fmt: skip
    order_id = placed.order_id
    taxed = await shop.checkout.CalculateTax(
        checkout_pb.CalculateTaxRequest(idempotency_key=f"{order_id.value}:tax", order_id=order_id)
    )
    await shop.checkout.AssessFraud(
        checkout_pb.AssessFraudRequest(idempotency_key=f"{order_id.value}:fraud", order_id=order_id)
    )
    authorized = await shop.payment.AuthorizePayment(
        payment_pb.AuthorizePaymentRequest(
            idempotency_key=f"{order_id.value}:authorize", order_id=order_id,
            customer_id=customer, amount=taxed.total, payment_method="pm_card_visa",
        )
    )  # fmt: skip
    confirmed = await shop.checkout.ConfirmOrder(
        checkout_pb.ConfirmOrderRequest(
            idempotency_key=f"{order_id.value}:confirm", order_id=order_id,
            reservation_id=ids_pb2.ReservationId(value=str(new_id())),
            payment_id=authorized.payment.payment_id,
        )
    )  # fmt: skip
    assert confirmed.order.status == checkout_pb.ORDER_STATUS_CONFIRMED
    return confirmed.order


def shipment_ids_of(requested: list[envelope_pb2.EventEnvelope]) -> list[str]:
    """The shipment ids checkout assigned, from its ShipmentRequested events."""
    ids = []
    for envelope in requested:
        message = shipping_events_pb2.ShipmentRequested()
        assert envelope.payload.Unpack(message)
        ids.append(message.shipment_id.value)
    return ids


async def outbox_envelopes(
    engine: AsyncEngine, table: object, event_type: str, aggregate_ids: list[str]
) -> list[envelope_pb2.EventEnvelope]:
    from sqlalchemy import Table

    assert isinstance(table, Table)
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(table.c.envelope)
            .where(table.c.event_type == event_type, table.c.aggregate_id.in_(aggregate_ids))
            .order_by(table.c.id)
        )
        return [envelope_pb2.EventEnvelope.FromString(row.envelope) for row in rows]


def twice_shuffled(
    envelopes: list[envelope_pb2.EventEnvelope], seed: int
) -> list[envelope_pb2.EventEnvelope]:
    copies = [envelope_pb2.EventEnvelope.FromString(e.SerializeToString()) for e in envelopes]
    deliveries = envelopes + copies
    random.Random(seed).shuffle(deliveries)
    return deliveries


async def until_handled(
    consumer: Consumer, envelope: envelope_pb2.EventEnvelope, uow: Callable[[], UnitOfWork]
) -> tuple[Outcome, int]:
    """Redeliver after each failure, as the queue does once the visibility timeout is over."""
    failures = 0
    async with asyncio.timeout(WITHIN):
        while True:
            try:
                return await process(consumer, envelope, uow), failures
            except Exception:
                failures += 1
                await asyncio.sleep(0)


async def order_of(shop: Shop, order: checkout_pb.Order) -> checkout_pb.Order:
    response = await shop.checkout.GetOrder(
        checkout_pb.GetOrderRequest(order_id=order.order_id, customer_id=order.customer_id)
    )
    return response.order


async def test_a_confirmed_order_ships_once_per_merchant_and_is_captured_once(
    shop: Shop,
    engine: AsyncEngine,
    psp: RunningPsp,
    unit_of_work: Callable[[], UnitOfWork],
) -> None:
    order = await confirmed_order(shop, ("acme", "globex"))
    order_id = order.order_id.value
    requested = await outbox_envelopes(
        engine, checkout_outbox, shipping_events_pb2.ShipmentRequested.DESCRIPTOR.full_name,
        [order_id],
    )  # fmt: skip
    assert len(requested) == 2
    carrier = CarrierSimulator(CarrierFaults(error_rate=0.5, seed=1))
    consumer = Consumer(
        shipping.CONSUMER,
        shipping.handlers(shipping.ShippingDeps(carrier, shop.checkout, shop.payment)),
    )

    results = await asyncio.gather(
        *(until_handled(consumer, e, unit_of_work) for e in twice_shuffled(requested, seed=3))
    )

    assert sorted(outcome for outcome, _ in results) == ["duplicate"] * 2 + ["handled"] * 2
    assert sum(failures for _, failures in results) == carrier.refusals > 0
    assert len(carrier.parcels) == 2
    shipment_ids = shipment_ids_of(requested)
    created = await outbox_envelopes(
        engine, tables.outbox, shipping_events_pb2.ShipmentCreated.DESCRIPTOR.full_name,
        shipment_ids,
    )  # fmt: skip
    assert len(created) == 2
    assert (await order_of(shop, order)).status == checkout_pb.ORDER_STATUS_CONFIRMED

    # ShipmentCreated delivered twice each, shuffled, with the ShipmentRequested again.
    mixed = [*twice_shuffled(created, seed=5), requested[0]]
    results = await asyncio.gather(*(until_handled(consumer, e, unit_of_work) for e in mixed))

    assert [outcome for outcome, _ in results].count(Outcome.HANDLED) == 2
    shipped = await order_of(shop, order)
    assert shipped.status == checkout_pb.ORDER_STATUS_SHIPPED
    assert sorted(s.tracking_number for s in shipped.shipments) == sorted(
        p.tracking_number for p in carrier.parcels.values()
    )
    paid = (
        await shop.payment.GetPayment(payment_pb.GetPaymentRequest(order_id=order.order_id))
    ).payment
    assert paid.status == payment_pb.PAYMENT_STATUS_CAPTURED
    assert paid.captured.amount_minor == paid.authorized.amount_minor == order.total.amount_minor
    captures = [
        op for op in paid.operations if op.kind == payment_pb.PAYMENT_OPERATION_KIND_CAPTURE
    ]
    assert len(captures) == 1
    (intent,) = await psp.intents(order_id=order_id)
    assert intent["amount_received"] == order.total.amount_minor
    assert len(carrier.parcels) == 2
    assert await outbox_envelopes(
        engine, tables.outbox, shipping_events_pb2.ShipmentCreated.DESCRIPTOR.full_name,
        shipment_ids,
    ) == created  # fmt: skip


async def test_a_cancelled_order_gets_no_parcel_whichever_event_comes_first(
    shop: Shop, engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    order = await confirmed_order(shop, ("acme",))
    cancelled = await shop.checkout.CancelOrder(
        checkout_pb.CancelOrderRequest(
            idempotency_key=f"{order.order_id.value}:cancel", order_id=order.order_id,
            customer_id=order.customer_id,
        )
    )  # fmt: skip
    assert cancelled.order.status == checkout_pb.ORDER_STATUS_CANCELLED
    events = await outbox_envelopes(
        engine, checkout_outbox, shipping_events_pb2.ShipmentRequested.DESCRIPTOR.full_name,
        [order.order_id.value],
    ) + await outbox_envelopes(
        engine, checkout_outbox, order_events_pb2.OrderCancelled.DESCRIPTOR.full_name,
        [order.order_id.value],
    )  # fmt: skip
    assert len(events) == 2
    carrier = CarrierSimulator()
    consumer = Consumer(
        shipping.CONSUMER,
        shipping.handlers(shipping.ShippingDeps(carrier, shop.checkout, shop.payment)),
    )

    # The cancellation first: the request books nothing.
    for envelope in reversed(events):
        await process(consumer, envelope, unit_of_work)

    assert carrier.parcels == {}
    async with engine.connect() as connection:
        status = await connection.scalar(
            select(tables.shipments.c.status).where(
                tables.shipments.c.shipment_id == uuid.UUID(shipment_ids_of(events[:1])[0])
            )
        )
    assert status == "CANCELLED"


async def test_a_shipment_created_for_a_cancelled_order_is_called_back_uncaptured(
    shop: Shop, engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    order = await confirmed_order(shop, ("acme",))
    (requested,) = await outbox_envelopes(
        engine, checkout_outbox, shipping_events_pb2.ShipmentRequested.DESCRIPTOR.full_name,
        [order.order_id.value],
    )  # fmt: skip
    carrier = CarrierSimulator()
    consumer = Consumer(
        shipping.CONSUMER,
        shipping.handlers(shipping.ShippingDeps(carrier, shop.checkout, shop.payment)),
    )
    await process(consumer, requested, unit_of_work)
    # The customer cancels while the parcel is on its way (OrderCancelled not seen yet).
    await shop.checkout.CancelOrder(
        checkout_pb.CancelOrderRequest(
            idempotency_key=f"{order.order_id.value}:cancel", order_id=order.order_id,
            customer_id=order.customer_id,
        )
    )  # fmt: skip
    (created,) = await outbox_envelopes(
        engine, tables.outbox, shipping_events_pb2.ShipmentCreated.DESCRIPTOR.full_name,
        shipment_ids_of([requested]),
    )  # fmt: skip

    assert await process(consumer, created, unit_of_work) is Outcome.HANDLED

    assert carrier.cancelled == {uuid.UUID(shipment_ids_of([requested])[0])}
    paid = (
        await shop.payment.GetPayment(payment_pb.GetPaymentRequest(order_id=order.order_id))
    ).payment
    assert paid.captured.amount_minor == 0
    assert (await order_of(shop, order)).status == checkout_pb.ORDER_STATUS_CANCELLED


class CommitLost(UnitOfWork):
    """A unit of work whose commit never lands: the writer went away as it committed."""

    async def __aexit__(self, exc_type: object, exc: object, traceback: object) -> None:
        await self.session.rollback()
        await self.session.close()
        raise DependencyUnavailable("the database has no writer right now (injected)")


async def test_a_parcel_booked_before_a_lost_commit_is_called_back_once_the_order_is_cancelled(
    shop: Shop, engine: AsyncEngine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    order = await confirmed_order(shop, ("acme",))
    (requested,) = await outbox_envelopes(
        engine, checkout_outbox, shipping_events_pb2.ShipmentRequested.DESCRIPTOR.full_name,
        [order.order_id.value],
    )  # fmt: skip
    shipment_id = uuid.UUID(shipment_ids_of([requested])[0])
    carrier = CarrierSimulator()
    consumer = Consumer(
        shipping.CONSUMER,
        shipping.handlers(shipping.ShippingDeps(carrier, shop.checkout, shop.payment)),
    )
    commit_lost = unit_of_work_factory(
        engine, OutboxWriter(tables.outbox, producer=shipping.CONSUMER), CommitLost
    )

    # The parcel is booked, then the transaction recording it is lost with the writer.
    with pytest.raises(DependencyUnavailable):
        await process(consumer, requested, commit_lost)
    assert set(carrier.parcels) == {shipment_id}
    # The customer cancels before the request is redelivered.
    await shop.checkout.CancelOrder(
        checkout_pb.CancelOrderRequest(
            idempotency_key=f"{order.order_id.value}:cancel", order_id=order.order_id,
            customer_id=order.customer_id,
        )
    )  # fmt: skip
    (cancelled,) = await outbox_envelopes(
        engine, checkout_outbox, order_events_pb2.OrderCancelled.DESCRIPTOR.full_name,
        [order.order_id.value],
    )  # fmt: skip
    await process(consumer, cancelled, unit_of_work)

    assert await process(consumer, requested, unit_of_work) is Outcome.HANDLED

    assert carrier.cancelled == {shipment_id}
    async with engine.connect() as connection:
        status = await connection.scalar(
            select(tables.shipments.c.status).where(tables.shipments.c.shipment_id == shipment_id)
        )
    assert status == "CANCELLED"
