"""What every payment use case is given: units of work, the PSP, and how hard to try."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from services.payment.domain.payment import Ledger
from services.payment.service_layer.ports import AbstractPaymentUnitOfWork, PaymentProvider


class DrivesInFlight:
    """The operations this process is driving: a concurrent caller joins the drive under way
    instead of sending the same operation again (which the PSP would answer 409)."""

    def __init__(self) -> None:
        self._drives: dict[uuid.UUID, asyncio.Future[Ledger]] = {}

    async def join(self, operation_id: uuid.UUID, start: Callable[[], Awaitable[Ledger]]) -> Ledger:
        """The outcome of the operation's drive, starting one if none is under way."""
        drive = self._drives.get(operation_id)
        if drive is None:
            drive = asyncio.ensure_future(start())
            self._drives[operation_id] = drive
            drive.add_done_callback(lambda done: self._finished(operation_id, done))
        # A caller that gives up (its deadline) does not stop the drive: it settles the ledger.
        return await asyncio.shield(drive)

    def _finished(self, operation_id: uuid.UUID, drive: asyncio.Future[Ledger]) -> None:
        if self._drives.get(operation_id) is drive:
            del self._drives[operation_id]
        if not drive.cancelled():
            drive.exception()  # retrieved here too, in case every caller gave up


@dataclass(frozen=True)
class PaymentDeps:
    """What the use cases need: units of work, the PSP, and how hard to try.

    Every use case takes its command (or arguments) first and these last:
    `async def use_case(command, deps: PaymentDeps) -> result`.
    """

    unit_of_work: Callable[[], AbstractPaymentUnitOfWork]
    psp: PaymentProvider
    attempts: int = 3
    backoff_seconds: float = 0.2
    # How long after its last recorded attempt an operation's owner (the saga, the shipping
    # consumer, a queue redrive) may still be retrying it: until then reconciliation never
    # reads the PSP's silence as "not applied". Well above the longest owner retry.
    owner_horizon: timedelta = timedelta(minutes=15)
    in_flight: DrivesInFlight = field(default_factory=DrivesInFlight)
