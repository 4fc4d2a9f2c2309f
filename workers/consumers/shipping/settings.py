"""The shipping consumer's settings: the services it calls."""

from __future__ import annotations

from workers.consumers.settings import ConsumerSettings


class ShippingSettings(ConsumerSettings):
    """CHECKOUT_TARGET and PAYMENT_TARGET (CARRIER_FAULT_* configure the carrier simulator)."""

    service_name: str = "shipping-consumer"
    consumer_queue: str = "shipping"
    checkout_target: str = "127.0.0.1:50054"
    payment_target: str = "127.0.0.1:50053"
