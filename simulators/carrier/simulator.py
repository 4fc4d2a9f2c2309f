"""The carrier simulator: books parcels once per shipment id, fails and dawdles on request.

It stands in for a carrier's API behind the shipping consumer's `Carrier` port. Like a real
carrier it is idempotent by the caller's shipment id (the same id books the same parcel and
tracking number); its faults are an error rate (nothing booked, `CarrierUnavailable`) and
added latency. Given a `bookings_path` it keeps every booking in that SQLite file
(simulators.carrier.bookings), so a restarted process books an earlier shipment id no
second time and the chaos harness can count parcels at the carrier; without one they live in
the process's memory only. Either way `parcels` holds what this process booked or was answered,
which tests count to prove that redeliveries book nothing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from simulators.carrier.bookings import CarrierBookings
from workers.consumers.shipping.carrier import Carrier, CarrierUnavailable, Parcel, ParcelRequest

CARRIER_NAME = "SIMCARRIER"


class CarrierFaults(BaseSettings):
    """Faults from CARRIER_FAULT_* variables: error rate 0..1, latency in milliseconds."""

    model_config = SettingsConfigDict(env_prefix="CARRIER_FAULT_", extra="ignore", frozen=True)

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    latency_ms: int = Field(default=0, ge=0)
    seed: int | None = None


def tracking_number(shipment_id: uuid.UUID) -> str:
    """The tracking number the simulator gives a shipment: derived from its id, so stable."""
    return "SIM" + hashlib.sha256(shipment_id.bytes).hexdigest()[:15].upper()


@dataclass
class CarrierSimulator(Carrier):
    """Books parcels (durably with a bookings file); counts calls, refusals and bookings."""

    faults: CarrierFaults = field(default_factory=CarrierFaults)
    parcels: dict[uuid.UUID, Parcel] = field(default_factory=dict)
    cancelled: set[uuid.UUID] = field(default_factory=set)
    calls: int = 0
    refusals: int = 0
    bookings_path: Path | None = None  # None: bookings live in this process's memory only

    def __post_init__(self) -> None:
        self._random = random.Random(self.faults.seed)
        self._bookings = None if self.bookings_path is None else CarrierBookings(self.bookings_path)

    async def create_parcel(self, request: ParcelRequest) -> Parcel:
        """Book the parcel, or return the one booked for this shipment id."""
        await self._behave()
        parcel = self.parcels.get(request.shipment_id)
        if parcel is None:
            parcel = Parcel(
                shipment_id=request.shipment_id,
                carrier=CARRIER_NAME,
                tracking_number=tracking_number(request.shipment_id),
                shipped_at=datetime.now(UTC),
            )
            if self._bookings is not None:
                # Another process (or this one before a restart) may have booked it already.
                parcel = await asyncio.to_thread(self._bookings.book, request, parcel)
            self.parcels[request.shipment_id] = parcel
        return parcel

    async def cancel_parcel(self, shipment_id: uuid.UUID) -> None:
        """Call the parcel back."""
        await self._behave()
        if self._bookings is not None:
            await asyncio.to_thread(self._bookings.call_back, shipment_id)
        self.cancelled.add(shipment_id)

    async def _behave(self) -> None:
        self.calls += 1
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        if self._random.random() < self.faults.error_rate:
            self.refusals += 1
            raise CarrierUnavailable("the carrier simulator refused the request (injected)")
