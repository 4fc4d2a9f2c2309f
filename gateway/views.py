"""Protos -> the public JSON shapes of ARCHITECTURE.md's API table."""

from __future__ import annotations

from typing import Any

from marketplace.cart.v1 import cart_service_pb2 as cart_pb
from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.common.v1 import money_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as inventory_pb
from marketplace.payment.v1 import payment_service_pb2 as payment_pb

JsonObject = dict[str, Any]


def money(value: money_pb2.Money) -> JsonObject:
    """`{"amount_minor", "currency"}`."""
    return {"amount_minor": value.amount_minor, "currency": value.currency}


def optional_money(message: Any, field: str) -> JsonObject | None:
    """The money field if it is set, else null (e.g. tax before it was calculated)."""
    return money(getattr(message, field)) if message.HasField(field) else None


def stock_level(level: inventory_pb.StockLevel) -> JsonObject:
    """`{"sku","on_hand","reserved","available"}`."""
    return {
        "sku": level.sku.value,
        "on_hand": level.on_hand,
        "reserved": level.reserved,
        "available": level.available,
    }


def product(value: cart_pb.Product) -> JsonObject:
    """A catalog product."""
    return {
        "sku": value.sku.value,
        "name": value.name,
        "price": money(value.price),
        "merchant_id": value.merchant_id.value,
        "listed": value.listed,
    }


def line(value: cart_pb.CartLine | checkout_pb.OrderLine) -> JsonObject:
    """`{"sku","quantity","unit_price","line_total"}`."""
    return {
        "sku": value.sku.value,
        "quantity": value.quantity,
        "unit_price": money(value.unit_price),
        "line_total": money(value.line_total),
    }


def cart(value: cart_pb.Cart) -> JsonObject:
    """`{"cart_id","customer_id","version","lines","subtotal"}`."""
    return {
        "cart_id": value.cart_id.value,
        "customer_id": value.customer_id.value,
        "version": value.version,
        "lines": [line(item) for item in value.lines],
        "subtotal": optional_money(value, "subtotal"),
    }


def order_status(status: int) -> str:
    """`PENDING`, `CONFIRMED`, `SHIPPED`, `CANCELLED`."""
    return checkout_pb.OrderStatus.Name(status).removeprefix("ORDER_STATUS_")  # type: ignore[arg-type]


def failure_reason(reason: int) -> str | None:
    """`payment_declined`, `out_of_stock`, ...; null while the order is not CANCELLED."""
    if reason == checkout_pb.FAILURE_REASON_UNSPECIFIED:
        return None
    name = checkout_pb.FailureReason.Name(reason)  # type: ignore[arg-type]
    return name.removeprefix("FAILURE_REASON_").lower()


def payment(value: checkout_pb.OrderPayment) -> JsonObject:
    """`{"status","authorized","captured","refunded"}`; status like `AUTHORIZED`."""
    status = payment_pb.PaymentStatus.Name(value.status)
    return {
        "status": status.removeprefix("PAYMENT_STATUS_"),
        "authorized": optional_money(value, "authorized"),
        "captured": optional_money(value, "captured"),
        "refunded": optional_money(value, "refunded"),
    }


def order(value: checkout_pb.Order) -> JsonObject:
    """The order as a customer sees it."""
    return {
        "order_id": value.order_id.value,
        "status": order_status(value.status),
        "lines": [line(item) for item in value.lines],
        "subtotal": optional_money(value, "subtotal"),
        "tax": optional_money(value, "tax"),
        "total": optional_money(value, "total"),
        "failure_reason": failure_reason(value.failure_reason),
        "payment": payment(value.payment) if value.HasField("payment") else None,
    }
