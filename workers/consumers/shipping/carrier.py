"""The carrier port: hand a merchant's parcel to a carrier, idempotently by shipment id."""

from __future__ import annotations

import abc
import uuid
from dataclasses import dataclass
from datetime import datetime

from marketplace_platform.errors import DependencyUnavailable


@dataclass(frozen=True, kw_only=True)
class ParcelRequest:
    """One merchant's part of an order, to be shipped to the customer."""

    shipment_id: uuid.UUID
    order_id: uuid.UUID
    merchant_id: str
    recipient: str
    postal_code: str
    country: str
    units: int


@dataclass(frozen=True, kw_only=True)
class Parcel:
    """A parcel the carrier accepted."""

    shipment_id: uuid.UUID
    carrier: str
    tracking_number: str
    shipped_at: datetime


class CarrierUnavailable(DependencyUnavailable):
    """The carrier did not accept the request this time; asking again is safe (the consumer
    retries it with a growing backoff, without using up the message's receives)."""


class Carrier(abc.ABC):
    """A shipping carrier's API; both calls are idempotent by shipment id."""

    @abc.abstractmethod
    async def create_parcel(self, request: ParcelRequest) -> Parcel:
        """Book the parcel; the same shipment id again returns the same parcel."""

    @abc.abstractmethod
    async def cancel_parcel(self, shipment_id: uuid.UUID) -> None:
        """Call the parcel back (its order was cancelled); repeating it is harmless."""
