"""Payment's domain events, in the contract's wire form."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message

from marketplace.common.v1 import ids_pb2, money_pb2
from marketplace.events.v1 import payment_events_pb2 as events
from marketplace.payment.v1 import payment_service_pb2 as pb
from services.payment.domain.payment import Operation, OperationKind, Payment

AGGREGATE = "order"

_Event = TypeVar(
    "_Event",
    events.PaymentAuthorized,
    events.PaymentCaptured,
    events.PaymentVoided,
    events.PaymentRefunded,
)


def money(amount: int, currency: str) -> money_pb2.Money:
    """Minor units and currency as the contract's Money."""
    return money_pb2.Money(amount_minor=amount, currency=currency)


def succeeded(payment: Payment, operation: Operation) -> Message:
    """The event of an operation the PSP applied."""
    if operation.kind is OperationKind.AUTHORIZE:
        authorized = _stamped(events.PaymentAuthorized(), payment, operation)
        authorized.psp_reference = payment.psp_intent_id or ""
        if payment.capture_before is not None:
            authorized.capture_before.FromDatetime(payment.capture_before)
        return authorized
    if operation.kind is OperationKind.CAPTURE:
        captured = _stamped(events.PaymentCaptured(), payment, operation)
        captured.total_captured.CopyFrom(money(payment.captured, payment.currency))
        return captured
    if operation.kind is OperationKind.VOID:
        return _stamped(events.PaymentVoided(), payment, operation)
    refunded = _stamped(events.PaymentRefunded(), payment, operation)
    refunded.total_refunded.CopyFrom(money(payment.refunded, payment.currency))
    return refunded


def _stamped(event: _Event, payment: Payment, operation: Operation) -> _Event:
    """Fill the fields every payment event has."""
    event.payment_id.value = str(payment.payment_id)
    event.order_id.value = str(payment.order_id)
    event.customer_id.value = payment.customer_id
    event.amount.CopyFrom(money(operation.amount, payment.currency))
    event.operation_id = str(operation.operation_id)
    return event


def failed(payment: Payment, operation: Operation, code: str) -> events.PaymentFailed:
    """The event of an operation the PSP refused."""
    return events.PaymentFailed(
        payment_id=ids_pb2.PaymentId(value=str(payment.payment_id)),
        order_id=ids_pb2.OrderId(value=str(payment.order_id)),
        customer_id=ids_pb2.CustomerId(value=payment.customer_id),
        kind=pb.PaymentOperationKind.Value(f"PAYMENT_OPERATION_KIND_{operation.kind.value}"),
        amount=money(operation.amount, payment.currency),
        failure_code=code,
        operation_id=str(operation.operation_id),
    )
