"""Wire the shipping consumer: the carrier simulator and channels to checkout and payment."""

from __future__ import annotations

from marketplace.checkout.v1 import checkout_service_pb2_grpc as checkout_grpc
from marketplace.payment.v1 import payment_service_pb2_grpc as payment_grpc
from simulators.carrier.simulator import CarrierFaults, CarrierSimulator
from workers.consumers.consumer import Consumer
from workers.consumers.runner import Closer
from workers.consumers.settings import service_channel
from workers.consumers.shipping import handlers
from workers.consumers.shipping.settings import ShippingSettings

CHECKOUT_SERVICE = "marketplace.checkout.v1.CheckoutService"
PAYMENT_SERVICE = "marketplace.payment.v1.PaymentService"


async def wire(settings: ShippingSettings) -> tuple[Consumer, Closer]:
    """The shipping consumer and a closer for its channels."""
    checkout = service_channel(settings, settings.checkout_target, CHECKOUT_SERVICE)
    payment = service_channel(settings, settings.payment_target, PAYMENT_SERVICE)
    deps = handlers.ShippingDeps(
        CarrierSimulator(CarrierFaults(), bookings_path=settings.carrier_bookings_path),
        checkout_grpc.CheckoutServiceStub(checkout),
        payment_grpc.PaymentServiceStub(payment),
    )

    async def close() -> None:
        await checkout.close()
        await payment.close()

    return Consumer(handlers.CONSUMER, handlers.handlers(deps)), close
