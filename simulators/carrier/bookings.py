"""The carrier simulator's durable bookings: one SQLite row per shipment id (WAL).

A shipping process that is killed and restarted opens the same file and sees every parcel
booked before, so booking the same shipment id again returns the parcel already booked. The
chaos harness reads the same file as the carrier's own record of what it was asked to ship.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from workers.consumers.shipping.carrier import Parcel, ParcelRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bookings (
    shipment_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    carrier TEXT NOT NULL,
    tracking_number TEXT NOT NULL,
    units INTEGER NOT NULL,
    shipped_at TEXT NOT NULL,
    called_back_at TEXT
);
"""
BUSY_TIMEOUT_SECONDS = 30.0  # another process holding the write lock (a second shipping worker)


@dataclass(frozen=True, kw_only=True)
class Booking:
    """One parcel the carrier booked, and whether it was called back since."""

    shipment_id: str
    order_id: str
    merchant_id: str
    tracking_number: str
    units: int
    called_back: bool


class CarrierBookings:
    """The bookings file: book once per shipment id, call back, list."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # One connection per call: calls run in worker threads, and connections stay in theirs.
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    def book(self, request: ParcelRequest, parcel: Parcel) -> Parcel:
        """Record `parcel` unless the shipment id is booked already; the parcel on record."""
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR IGNORE INTO bookings (shipment_id, order_id, merchant_id, carrier,"
                " tracking_number, units, shipped_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (str(request.shipment_id), str(request.order_id), request.merchant_id,
                 parcel.carrier, parcel.tracking_number, request.units,
                 parcel.shipped_at.isoformat()),
            )  # fmt: skip
            row = db.execute(
                "SELECT carrier, tracking_number, shipped_at FROM bookings WHERE shipment_id = ?",
                (str(request.shipment_id),),
            ).fetchone()
            db.execute("COMMIT")
        carrier, tracking, shipped_at = row
        return Parcel(
            shipment_id=request.shipment_id,
            carrier=carrier,
            tracking_number=tracking,
            shipped_at=datetime.fromisoformat(shipped_at),
        )

    def call_back(self, shipment_id: uuid.UUID) -> bool:
        """Mark the parcel called back (the first time counts); False if it was never booked."""
        with self._connection() as db:
            db.execute(
                "UPDATE bookings SET called_back_at = coalesce(called_back_at, ?)"
                " WHERE shipment_id = ?",
                (datetime.now(UTC).isoformat(), str(shipment_id)),
            )
            known = db.execute(
                "SELECT 1 FROM bookings WHERE shipment_id = ?", (str(shipment_id),)
            ).fetchone()
        return known is not None

    def all(self) -> list[Booking]:
        """Every booking, oldest shipment id first."""
        return read_bookings(self.path)


def read_bookings(path: Path) -> list[Booking]:
    """Every booking in the file at `path`, which must exist (reads only)."""
    if not path.is_file():
        raise FileNotFoundError(f"no carrier bookings at {path}")
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS)
    try:
        rows = db.execute(
            "SELECT shipment_id, order_id, merchant_id, tracking_number, units,"
            " called_back_at IS NOT NULL FROM bookings ORDER BY shipment_id"
        ).fetchall()
    finally:
        db.close()
    return [
        Booking(
            shipment_id=shipment_id,
            order_id=order_id,
            merchant_id=merchant_id,
            tracking_number=tracking,
            units=units,
            called_back=bool(called_back),
        )
        for shipment_id, order_id, merchant_id, tracking, units, called_back in rows
    ]
