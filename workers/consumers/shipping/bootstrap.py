"""Wire the shipping consumer: the carrier simulator and channels to checkout and payment."""

from __future__ import annotations

from marketplace.checkout.v1 import checkout_service_pb2_grpc as checkout_grpc
from marketplace.payment.v1 import payment_service_pb2_grpc as payment_grpc
from marketplace_platform.channels import open_channel
from simulators.carrier.simulator import CarrierFaults, CarrierSimulator
from workers.consumers.consumer import Consumer
from workers.consumers.runner import Closer
from workers.consumers.shipping import handlers
from workers.consumers.shipping.settings import ShippingSettings


async def wire(settings: ShippingSettings) -> tuple[Consumer, Closer]:
    """The shipping consumer and a closer for its channels."""
    timeout = settings.default_call_timeout_seconds
    checkout = open_channel(
        settings.checkout_target,
        default_timeout=timeout,
        idempotent_services=["marketplace.checkout.v1.CheckoutService"],
    )
    payment = open_channel(
        settings.payment_target,
        default_timeout=timeout,
        idempotent_services=["marketplace.payment.v1.PaymentService"],
    )
    deps = handlers.ShippingDeps(
        CarrierSimulator(CarrierFaults(), bookings_path=settings.carrier_bookings_path),
        checkout_grpc.CheckoutServiceStub(checkout),
        payment_grpc.PaymentServiceStub(payment),
    )

    async def close() -> None:
        await checkout.close()
        await payment.close()

    return Consumer(handlers.CONSUMER, handlers.handlers(deps)), close
