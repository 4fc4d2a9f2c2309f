"""What checkout's use cases run against: the unit of work and the ports to other systems."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from marketplace_platform.saga import SagaStarter
from services.checkout.service_layer.ports import (
    AbstractCheckoutUnitOfWork,
    CartPort,
    PaymentPort,
)


@dataclass(frozen=True, kw_only=True)
class CheckoutDeps:
    """What checkout's use cases need: units of work and the ports to other systems.

    Every use case takes it last, as `deps`: `use_case(inputs..., *, deps) -> result`.
    """

    unit_of_work: Callable[[], AbstractCheckoutUnitOfWork]
    # Units of work on a reader endpoint (replicas that may lag the writer), for order reads
    # that can be a little stale; None reads everything from the writer.
    reader: Callable[[], AbstractCheckoutUnitOfWork] | None = None
    carts: CartPort
    payments: PaymentPort
    saga: SagaStarter
    # How long a first request owns its key before a retry may take over (longer than the
    # PriceCart deadline, so a live request is never overtaken).
    lease: timedelta = timedelta(seconds=30)
