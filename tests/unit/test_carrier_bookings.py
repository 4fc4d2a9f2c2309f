"""The carrier simulator's bookings file: a restarted simulator books a shipment id no second
time, call-backs are recorded, and the chaos harness reads what was booked."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from simulators.carrier.bookings import read_bookings
from simulators.carrier.simulator import CarrierSimulator
from verification.collect import carrier_bookings
from verification.snapshot import CarrierBooking
from verification.stack import ChaosStack, carrier_bookings_path
from workers.consumers.shipping.carrier import ParcelRequest


def parcel_request(shipment_id: uuid.UUID, order_id: uuid.UUID) -> ParcelRequest:
    return ParcelRequest(
        shipment_id=shipment_id, order_id=order_id, merchant_id="acme", recipient="Ann",
        postal_code="12345", country="US", units=2,
    )  # fmt: skip


async def test_a_restarted_simulator_returns_the_parcel_booked_before(tmp_path: Path) -> None:
    path = tmp_path / "carrier" / "bookings.sqlite3"
    request = parcel_request(uuid.uuid4(), uuid.uuid4())
    first = await CarrierSimulator(bookings_path=path).create_parcel(request)

    restarted = CarrierSimulator(bookings_path=path)
    again = await restarted.create_parcel(request)

    assert again == first  # same tracking number and the original shipped_at
    (booking,) = read_bookings(path)
    assert booking.shipment_id == str(request.shipment_id)
    assert booking.order_id == str(request.order_id)
    assert (booking.merchant_id, booking.units, booking.called_back) == ("acme", 2, False)


async def test_a_call_back_is_recorded_for_the_harness(tmp_path: Path) -> None:
    path = tmp_path / "bookings.sqlite3"
    kept, called_back = parcel_request(uuid.uuid4(), uuid.uuid4()), uuid.uuid4()
    simulator = CarrierSimulator(bookings_path=path)
    await simulator.create_parcel(kept)
    await simulator.create_parcel(parcel_request(called_back, kept.order_id))

    await CarrierSimulator(bookings_path=path).cancel_parcel(called_back)
    await simulator.cancel_parcel(uuid.uuid4())  # never booked: nothing to call back

    states = {b.shipment_id: b.called_back for b in read_bookings(path)}
    assert states == {str(kept.shipment_id): False, str(called_back): True}


async def test_without_a_bookings_path_the_simulator_keeps_memory_only(tmp_path: Path) -> None:
    simulator = CarrierSimulator()
    request = parcel_request(uuid.uuid4(), uuid.uuid4())

    assert await simulator.create_parcel(request) == await simulator.create_parcel(request)
    assert list(simulator.parcels) == [request.shipment_id]
    with pytest.raises(FileNotFoundError):
        read_bookings(tmp_path / "absent.sqlite3")


async def test_the_harness_reads_the_runs_bookings_or_says_there_are_none(tmp_path: Path) -> None:
    stack = ChaosStack("postgresql://unused", tmp_path, 0, {})
    assert carrier_bookings(stack) is None  # not wired: invariant 4 is NOT CHECKED, never PASS

    simulator = CarrierSimulator(bookings_path=carrier_bookings_path(tmp_path))
    request = parcel_request(uuid.uuid4(), uuid.uuid4())
    await simulator.create_parcel(request)
    await simulator.cancel_parcel(request.shipment_id)

    assert carrier_bookings(stack) == (
        CarrierBooking(shipment_id=str(request.shipment_id), order_id=str(request.order_id),
                       merchant_id="acme", called_back=True),
    )  # fmt: skip
