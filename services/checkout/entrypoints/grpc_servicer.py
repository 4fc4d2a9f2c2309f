"""Checkout's gRPC servicer: proto -> command -> handler -> proto, nothing more."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any, TypeAlias

import grpc

from marketplace.checkout.v1 import checkout_service_pb2 as pb
from marketplace.checkout.v1 import checkout_service_pb2_grpc as pb_grpc
from marketplace.common.v1 import address_pb2, ids_pb2
from marketplace.payment.v1 import payment_service_pb2 as payment_pb
from services.checkout.domain.order import FailureReason, FraudDecision, Order, ShippingAddress
from services.checkout.service_layer import events, orders, placement, settlement_waits, steps
from services.checkout.service_layer.deps import CheckoutDeps
from services.checkout.service_layer.ports import PaymentSummary
from services.checkout.service_layer.settlement_waits import SettlementWaits

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
# Kept back from the caller's deadline when GetOrder waits: the last read and the answer.
ANSWER_RESERVE_SECONDS = 0.5


class CheckoutServicer(pb_grpc.CheckoutServiceServicer):
    """Translates CheckoutService calls to the checkout handlers."""

    def __init__(self, deps: CheckoutDeps, *, settlements: SettlementWaits) -> None:
        self.deps = deps
        self.settlements = settlements

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: Context
    ) -> pb.PlaceOrderResponse:
        command = placement.PlaceOrder(
            idempotency_key=request.idempotency_key,
            customer_id=request.customer_id.value,
            cart_id=uuid.UUID(request.cart_id.value),
            payment_method=request.payment_method,
            shipping_address=_address(request.shipping_address),
        )
        result = await placement.place_order(command, deps=self.deps)
        return pb.PlaceOrderResponse(
            order_id=ids_pb2.OrderId(value=str(result.order_id)),
            status=events.status(result.status),
            replayed=result.replayed,
        )

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        order_id, customer_id = uuid.UUID(request.order_id.value), request.customer_id.value
        within = _wait_within(request, context.time_remaining())
        if within > 0:
            view = await settlement_waits.get_order_once_settled(
                order_id, customer_id, within=within, waits=self.settlements, deps=self.deps
            )
        else:
            view = await orders.get_order(order_id, customer_id, deps=self.deps)
        return pb.GetOrderResponse(order=order_to_proto(view.order, view.payment))

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: Context
    ) -> pb.ListOrdersResponse:
        page, next_token = await orders.list_orders(
            request.customer_id.value,
            page_size=request.page_size or 20,
            page_token=request.page_token,
            deps=self.deps,
        )
        return pb.ListOrdersResponse(
            orders=[order_to_proto(order, None) for order in page], next_page_token=next_token
        )

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: Context
    ) -> pb.CancelOrderResponse:
        view = await orders.cancel_order(
            uuid.UUID(request.order_id.value), request.customer_id.value, deps=self.deps
        )
        return pb.CancelOrderResponse(order=order_to_proto(view.order, view.payment))

    async def CalculateTax(
        self, request: pb.CalculateTaxRequest, context: Context
    ) -> pb.CalculateTaxResponse:
        taxed = await steps.calculate_tax(uuid.UUID(request.order_id.value), deps=self.deps)
        return pb.CalculateTaxResponse(tax=events.money(taxed.tax), total=events.money(taxed.total))

    async def AssessFraud(
        self, request: pb.AssessFraudRequest, context: Context
    ) -> pb.AssessFraudResponse:
        verdict = await steps.assess_fraud(uuid.UUID(request.order_id.value), deps=self.deps)
        return pb.AssessFraudResponse(
            decision=(
                pb.FRAUD_DECISION_REJECT
                if verdict.decision is FraudDecision.REJECT
                else pb.FRAUD_DECISION_APPROVE
            ),
            risk_score=verdict.score,
            reason=verdict.reason,
        )

    async def ConfirmOrder(
        self, request: pb.ConfirmOrderRequest, context: Context
    ) -> pb.ConfirmOrderResponse:
        order = await steps.confirm_order(
            uuid.UUID(request.order_id.value),
            reservation_id=uuid.UUID(request.reservation_id.value),
            payment_id=uuid.UUID(request.payment_id.value),
            deps=self.deps,
        )
        return pb.ConfirmOrderResponse(order=order_to_proto(order, None))

    async def FailOrder(
        self, request: pb.FailOrderRequest, context: Context
    ) -> pb.FailOrderResponse:
        order = await steps.fail_order(
            uuid.UUID(request.order_id.value),
            reason=FailureReason(
                pb.FailureReason.Name(request.failure_reason).removeprefix("FAILURE_REASON_")
            ),
            detail=request.failure_detail,
            deps=self.deps,
        )
        return pb.FailOrderResponse(order=order_to_proto(order, None))

    async def MarkOrderShipped(
        self, request: pb.MarkOrderShippedRequest, context: Context
    ) -> pb.MarkOrderShippedResponse:
        shipment = request.shipment
        command = steps.MarkShipped(
            order_id=uuid.UUID(request.order_id.value),
            shipment_id=uuid.UUID(shipment.shipment_id.value),
            merchant_id=shipment.merchant_id.value,
            carrier=shipment.carrier,
            tracking_number=shipment.tracking_number,
            shipped_at=shipment.shipped_at.ToDatetime(tzinfo=UTC),
        )
        order = await steps.mark_shipped(command, deps=self.deps)
        return pb.MarkOrderShippedResponse(order=order_to_proto(order, None))


def order_to_proto(order: Order, payment: PaymentSummary | None) -> pb.Order:
    """The wire form of an order (with its payment summary when known)."""
    message = pb.Order(
        order_id=ids_pb2.OrderId(value=str(order.order_id)),
        customer_id=ids_pb2.CustomerId(value=order.customer_id),
        cart_id=ids_pb2.CartId(value=str(order.cart_id)),
        status=events.status(order.status),
        lines=[events.order_line(line) for line in order.lines],
        subtotal=events.money(order.subtotal),
        shipping_address=events.address(order),
        payment_method=order.payment_method,
        failure_detail=order.failure_detail,
    )
    if order.failure_reason is not None:
        message.failure_reason = pb.FailureReason.Value(
            f"FAILURE_REASON_{order.failure_reason.value}"
        )
    if order.tax is not None and order.total is not None:
        message.tax.CopyFrom(events.money(order.tax))
        message.total.CopyFrom(events.money(order.total))
    if payment is not None:
        message.payment.CopyFrom(
            pb.OrderPayment(
                status=_payment_status(payment.status),
                authorized=events.money(payment.authorized),
                captured=events.money(payment.captured),
                refunded=events.money(payment.refunded),
            )
        )
    for shipment in order.shipments:
        if not shipment.shipped:
            continue
        wire = pb.Shipment(
            shipment_id=ids_pb2.ShipmentId(value=str(shipment.shipment_id)),
            merchant_id=ids_pb2.MerchantId(value=shipment.merchant_id),
            carrier=shipment.carrier,
            tracking_number=shipment.tracking_number,
        )
        assert shipment.shipped_at is not None
        wire.shipped_at.FromDatetime(shipment.shipped_at)
        message.shipments.append(wire)
    if order.created_at is not None:
        message.created_at.FromDatetime(order.created_at)
    if order.updated_at is not None:
        message.updated_at.FromDatetime(order.updated_at)
    return message


def _wait_within(request: pb.GetOrderRequest, deadline_in: float | None) -> float:
    """The request's wait in seconds, cut short to answer before the caller's deadline."""
    if not request.HasField("wait"):
        return 0.0
    wait = request.wait.ToTimedelta().total_seconds()
    if deadline_in is None:
        return wait
    return min(wait, deadline_in - min(ANSWER_RESERVE_SECONDS, deadline_in / 2))


def _payment_status(name: str) -> payment_pb.PaymentStatus.ValueType:
    return payment_pb.PaymentStatus.Value(f"PAYMENT_STATUS_{name}")


def _address(wire: address_pb2.Address) -> ShippingAddress:
    return ShippingAddress(
        name=wire.name,
        line1=wire.line1,
        line2=wire.line2,
        city=wire.city,
        region=wire.region,
        postal_code=wire.postal_code,
        country=wire.country,
    )
