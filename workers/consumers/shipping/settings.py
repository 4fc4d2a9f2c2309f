"""The shipping consumer's settings: the services it calls, and where the carrier keeps books."""

from __future__ import annotations

from pathlib import Path

from workers.consumers.settings import ConsumerSettings


class ShippingSettings(ConsumerSettings):
    """CHECKOUT_TARGET and PAYMENT_TARGET (CARRIER_FAULT_* configure the carrier simulator)."""

    service_name: str = "shipping-consumer"
    consumer_queue: str = "shipping"
    checkout_target: str = "127.0.0.1:50054"
    payment_target: str = "127.0.0.1:50053"
    # The carrier simulator's bookings (SQLite): kept across restarts, read by the chaos harness.
    carrier_bookings_path: Path = Path(".local/carrier/bookings.sqlite3")
