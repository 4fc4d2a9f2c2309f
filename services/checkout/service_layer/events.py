"""Checkout's domain events (and the shared wire pieces), in the contract's form."""

from __future__ import annotations

from dataclasses import asdict

from marketplace.checkout.v1 import checkout_service_pb2 as pb
from marketplace.common.v1 import address_pb2, ids_pb2, money_pb2
from marketplace.events.v1 import order_events_pb2, shipping_events_pb2
from marketplace_platform.money import Money
from services.checkout.domain.order import Order, OrderLine, OrderStatus, Shipment

AGGREGATE = "order"


def money(value: Money) -> money_pb2.Money:
    """Minor units and currency as the contract's Money."""
    return money_pb2.Money(amount_minor=value.amount_minor, currency=value.currency)


def order_line(line: OrderLine) -> pb.OrderLine:
    """One order line as the contract has it."""
    return pb.OrderLine(
        sku=ids_pb2.Sku(value=line.sku),
        merchant_id=ids_pb2.MerchantId(value=line.merchant_id),
        name=line.name,
        quantity=line.quantity,
        unit_price=money(line.unit_price),
        line_total=money(line.line_total),
    )


def address(order: Order) -> address_pb2.Address:
    """The order's shipping address as the contract has it."""
    return address_pb2.Address(**asdict(order.shipping_address))


def status(value: OrderStatus) -> pb.OrderStatus.ValueType:
    """The contract's enum value for an order status."""
    return pb.OrderStatus.Value(f"ORDER_STATUS_{value.value}")


def order_pending(order: Order) -> order_events_pb2.OrderPending:
    """The order was accepted and its saga is starting."""
    return order_events_pb2.OrderPending(
        order_id=ids_pb2.OrderId(value=str(order.order_id)),
        customer_id=ids_pb2.CustomerId(value=order.customer_id),
        cart_id=ids_pb2.CartId(value=str(order.cart_id)),
        lines=[order_line(line) for line in order.lines],
        subtotal=money(order.subtotal),
    )


def order_placed(order: Order) -> order_events_pb2.OrderPlaced:
    """The order was confirmed: stock committed, payment authorized."""
    assert order.tax is not None
    assert order.total is not None
    return order_events_pb2.OrderPlaced(
        order_id=ids_pb2.OrderId(value=str(order.order_id)),
        customer_id=ids_pb2.CustomerId(value=order.customer_id),
        lines=[order_line(line) for line in order.lines],
        subtotal=money(order.subtotal),
        tax=money(order.tax),
        total=money(order.total),
        shipping_address=address(order),
        payment_id=ids_pb2.PaymentId(value=str(order.payment_id)),
        reservation_id=ids_pb2.ReservationId(value=str(order.reservation_id)),
    )


def shipment_requested(order: Order, shipment: Shipment) -> shipping_events_pb2.ShipmentRequested:
    """One merchant must ship its part of the confirmed order."""
    return shipping_events_pb2.ShipmentRequested(
        shipment_id=ids_pb2.ShipmentId(value=str(shipment.shipment_id)),
        order_id=ids_pb2.OrderId(value=str(order.order_id)),
        customer_id=ids_pb2.CustomerId(value=order.customer_id),
        merchant_id=ids_pb2.MerchantId(value=shipment.merchant_id),
        lines=[order_line(line) for line in order.lines_of(shipment.merchant_id)],
        shipping_address=address(order),
    )


def order_cancelled(order: Order, previous: OrderStatus) -> order_events_pb2.OrderCancelled:
    """The order ended CANCELLED."""
    assert order.failure_reason is not None
    return order_events_pb2.OrderCancelled(
        order_id=ids_pb2.OrderId(value=str(order.order_id)),
        customer_id=ids_pb2.CustomerId(value=order.customer_id),
        failure_reason=pb.FailureReason.Value(f"FAILURE_REASON_{order.failure_reason.value}"),
        failure_detail=order.failure_detail,
        previous_status=status(previous),
        total=money(order.total or order.subtotal),
    )


Event = (
    order_events_pb2.OrderPending
    | order_events_pb2.OrderPlaced
    | order_events_pb2.OrderCancelled
    | shipping_events_pb2.ShipmentRequested
)
