"""Wire the payment-release consumer: its settings and a channel to the payment service."""

from __future__ import annotations

from marketplace.payment.v1 import payment_service_pb2_grpc as payment_grpc
from workers.consumers.consumer import Consumer
from workers.consumers.payment_release import handlers
from workers.consumers.runner import Closer
from workers.consumers.settings import ConsumerSettings, service_channel

PAYMENT_SERVICE = "marketplace.payment.v1.PaymentService"


class PaymentReleaseSettings(ConsumerSettings):
    """PAYMENT_TARGET, with the shared consumer settings."""

    service_name: str = "payment-release-consumer"
    consumer_queue: str = "payment-release"
    payment_target: str = "127.0.0.1:50053"


async def wire(settings: PaymentReleaseSettings) -> tuple[Consumer, Closer]:
    """The payment-release consumer and a closer for its channel."""
    channel = service_channel(settings, settings.payment_target, PAYMENT_SERVICE)
    stub = payment_grpc.PaymentServiceStub(channel)
    return Consumer(handlers.CONSUMER, handlers.handlers(stub)), channel.close
