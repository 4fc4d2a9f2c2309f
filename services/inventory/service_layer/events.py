"""Inventory's domain events, in the contract's wire form."""

from __future__ import annotations

from marketplace.common.v1 import ids_pb2
from marketplace.events.v1 import inventory_events_pb2 as events
from marketplace.inventory.v1 import inventory_service_pb2 as pb
from services.inventory.domain.reservation import ReleaseReason, Reservation

AGGREGATE = "order"


def wire_lines(reservation: Reservation) -> list[pb.ReservationLine]:
    """The reservation's lines as contract messages."""
    return [
        pb.ReservationLine(sku=ids_pb2.Sku(value=line.sku), quantity=line.quantity)
        for line in reservation.lines
    ]


def wire_release_reason(reason: ReleaseReason | None) -> pb.ReleaseReason.ValueType:
    """The contract's enum value of a release reason."""
    if reason is None:
        return pb.RELEASE_REASON_UNSPECIFIED
    return pb.ReleaseReason.Value(f"RELEASE_REASON_{reason.value}")


def reserved(reservation: Reservation) -> events.InventoryReserved:
    """Stock was set aside for an order."""
    event = events.InventoryReserved(
        reservation_id=ids_pb2.ReservationId(value=str(reservation.reservation_id)),
        order_id=ids_pb2.OrderId(value=str(reservation.order_id)),
        lines=wire_lines(reservation),
    )
    event.expires_at.FromDatetime(reservation.expires_at)
    return event


def released(reservation: Reservation) -> events.InventoryReleased:
    """Reserved stock went back to available."""
    return events.InventoryReleased(
        reservation_id=ids_pb2.ReservationId(value=str(reservation.reservation_id)),
        order_id=ids_pb2.OrderId(value=str(reservation.order_id)),
        lines=wire_lines(reservation),
        reason=wire_release_reason(reservation.release_reason),
    )


def committed(reservation: Reservation) -> events.InventoryCommitted:
    """Reserved stock was sold."""
    return events.InventoryCommitted(
        reservation_id=ids_pb2.ReservationId(value=str(reservation.reservation_id)),
        order_id=ids_pb2.OrderId(value=str(reservation.order_id)),
        lines=wire_lines(reservation),
    )
