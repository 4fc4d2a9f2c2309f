"""Payment's gRPC servicer: proto -> command -> handler -> proto, nothing more."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

import grpc

from marketplace.common.v1 import ids_pb2
from marketplace.payment.v1 import payment_service_pb2 as pb
from marketplace.payment.v1 import payment_service_pb2_grpc as pb_grpc
from services.payment.domain.payment import Operation, OperationKind, Payment
from services.payment.service_layer import payments, reconciliation, release
from services.payment.service_layer.deps import PaymentDeps
from services.payment.service_layer.events import money

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class PaymentServicer(pb_grpc.PaymentServiceServicer):
    """Translates PaymentService calls to the payment handlers."""

    def __init__(self, deps: PaymentDeps) -> None:
        self.deps = deps

    async def AuthorizePayment(
        self, request: pb.AuthorizePaymentRequest, context: Context
    ) -> pb.AuthorizePaymentResponse:
        command = payments.Authorize(
            order_id=uuid.UUID(request.order_id.value),
            customer_id=request.customer_id.value,
            amount=request.amount.amount_minor,
            currency=request.amount.currency,
            payment_method=request.payment_method,
        )
        ledger = await payments.authorize_with_ledger(command, self.deps)
        return pb.AuthorizePaymentResponse(
            payment=payment_to_proto(ledger.payment, ledger.operations)
        )

    async def CapturePayment(
        self, request: pb.CapturePaymentRequest, context: Context
    ) -> pb.CapturePaymentResponse:
        payment = await self._operate(
            request, OperationKind.CAPTURE, request.amount.amount_minor, request.amount.currency
        )
        return pb.CapturePaymentResponse(payment=payment)

    async def VoidPayment(
        self, request: pb.VoidPaymentRequest, context: Context
    ) -> pb.VoidPaymentResponse:
        payment = await payments.void(
            payments.Void(
                order_id=uuid.UUID(request.order_id.value), request_key=request.idempotency_key
            ),
            self.deps,
        )
        if payment is None:
            return pb.VoidPaymentResponse()  # the order has no payment: nothing to release
        return pb.VoidPaymentResponse(payment=await self._wire(payment))

    async def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: Context
    ) -> pb.RefundPaymentResponse:
        payment = await self._operate(
            request, OperationKind.REFUND, request.amount.amount_minor, request.amount.currency
        )
        return pb.RefundPaymentResponse(payment=payment)

    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: Context
    ) -> pb.GetPaymentResponse:
        payment, operations = await payments.get_payment(
            uuid.UUID(request.order_id.value), self.deps
        )
        return pb.GetPaymentResponse(payment=payment_to_proto(payment, operations))

    async def ReconcilePayments(
        self, request: pb.ReconcilePaymentsRequest, context: Context
    ) -> pb.ReconcilePaymentsResponse:
        command = reconciliation.Reconcile(
            orphan_after=request.orphan_after.ToTimedelta()
            if request.HasField("orphan_after")
            else reconciliation.DEFAULT_ORPHAN_AFTER,
            capture_warning_window=request.capture_warning_window.ToTimedelta()
            if request.HasField("capture_warning_window")
            else reconciliation.CAPTURE_WARNING_WINDOW,
            dry_run=request.dry_run,
        )
        report = await reconciliation.reconcile(command, self.deps)
        return pb.ReconcilePaymentsResponse(report=reconciliation.report_to_proto(report))

    async def ReleaseOrderPayment(
        self, request: pb.ReleaseOrderPaymentRequest, context: Context
    ) -> pb.ReleaseOrderPaymentResponse:
        released = await release.release(
            release.Release(order_id=uuid.UUID(request.order_id.value)), self.deps
        )
        response = pb.ReleaseOrderPaymentResponse(settled=released.settled)
        if released.payment is not None:  # unset: the order never had a payment
            response.payment.CopyFrom(await self._wire(released.payment))
        return response

    async def _operate(
        self, request: Any, kind: OperationKind, amount: int, currency: str
    ) -> pb.Payment:
        command = payments.Operate(
            order_id=uuid.UUID(request.order_id.value),
            kind=kind,
            amount=amount,
            currency=currency,
            request_key=request.idempotency_key,
        )
        return await self._wire(await payments.operate(command, self.deps))

    async def _wire(self, payment: Payment) -> pb.Payment:
        _, operations = await payments.get_payment(payment.order_id, self.deps)
        return payment_to_proto(payment, operations)


def payment_to_proto(payment: Payment, operations: Sequence[Operation]) -> pb.Payment:
    """The wire form of a payment and its ledger."""
    message = pb.Payment(
        payment_id=ids_pb2.PaymentId(value=str(payment.payment_id)),
        order_id=ids_pb2.OrderId(value=str(payment.order_id)),
        customer_id=ids_pb2.CustomerId(value=payment.customer_id),
        status=pb.PaymentStatus.Value(f"PAYMENT_STATUS_{payment.status.value}"),
        authorized=money(payment.authorized, payment.currency),
        captured=money(payment.captured, payment.currency),
        refunded=money(payment.refunded, payment.currency),
        psp_reference=payment.psp_intent_id or "",
        failure_code=payment.failure_code or "",
        payment_method=payment.payment_method,
    )
    if payment.capture_before is not None:
        message.capture_before.FromDatetime(payment.capture_before)
    for operation in operations:
        wire = pb.PaymentOperation(
            operation_id=str(operation.operation_id),
            kind=pb.PaymentOperationKind.Value(f"PAYMENT_OPERATION_KIND_{operation.kind.value}"),
            state=pb.PaymentOperationState.Value(
                f"PAYMENT_OPERATION_STATE_{operation.state.value}"
            ),
            amount=money(operation.amount, payment.currency),
            psp_idempotency_key=operation.psp_idempotency_key(payment.order_id),
            failure_code=operation.failure_code or "",
        )
        if operation.created_at is not None:
            wire.created_at.FromDatetime(operation.created_at)
        message.operations.append(wire)
    return message
