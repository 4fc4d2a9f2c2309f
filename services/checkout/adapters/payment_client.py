"""The payment service over gRPC, as checkout's PaymentPort."""

from __future__ import annotations

import uuid

import grpc

from marketplace.common.v1 import ids_pb2
from marketplace.payment.v1 import payment_service_pb2 as pb
from marketplace.payment.v1 import payment_service_pb2_grpc as pb_grpc
from marketplace_platform.errors import NotFound
from marketplace_platform.grpc_errors import translated
from marketplace_platform.money import Money
from services.checkout.service_layer.ports import PaymentPort, PaymentSummary

SERVICE = pb.DESCRIPTOR.services_by_name["PaymentService"].full_name


class GrpcPaymentPort(PaymentPort):
    """Calls PaymentService.GetPayment with a deadline."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self._stub = pb_grpc.PaymentServiceStub(channel)
        self._timeout = timeout

    async def summary(self, order_id: uuid.UUID) -> PaymentSummary | None:
        """The order's payment, or None when it has none."""
        try:
            response: pb.GetPaymentResponse = await translated(
                "payment",
                self._stub.GetPayment(
                    pb.GetPaymentRequest(order_id=ids_pb2.OrderId(value=str(order_id))),
                    timeout=self._timeout,
                ),
            )
        except NotFound:
            return None
        return payment_summary(response.payment)


def payment_summary(wire: pb.Payment) -> PaymentSummary:
    """The contract's Payment as the port's summary."""
    return PaymentSummary(
        status=pb.PaymentStatus.Name(wire.status).removeprefix("PAYMENT_STATUS_"),
        authorized=Money(wire.authorized.amount_minor, wire.authorized.currency),
        captured=Money(wire.captured.amount_minor, wire.captured.currency),
        refunded=Money(wire.refunded.amount_minor, wire.refunded.currency),
    )
