"""Inventory's gRPC servicer: proto -> command -> use case -> proto, nothing more.

Field rules were already enforced by the platform's boundary interceptor.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

import grpc

from marketplace.common.v1 import ids_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from services.inventory.domain.reservation import ReleaseReason, Reservation, ReservationLine
from services.inventory.domain.stock import StockLevel
from services.inventory.service_layer import events, reservations, stock
from services.inventory.service_layer.deps import InventoryDeps

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class InventoryServicer(pb_grpc.InventoryServiceServicer):
    """Translates InventoryService calls to inventory's use cases."""

    def __init__(self, deps: InventoryDeps) -> None:
        self.deps = deps

    async def SetStock(self, request: pb.SetStockRequest, context: Context) -> pb.SetStockResponse:
        command = stock.SetStock(sku=request.sku.value, on_hand=request.on_hand)
        level = await stock.set_stock(command, self.deps)
        return pb.SetStockResponse(stock_level=stock_to_proto(level))

    async def GetStock(self, request: pb.GetStockRequest, context: Context) -> pb.GetStockResponse:
        level = await stock.get_stock(request.sku.value, self.deps)
        return pb.GetStockResponse(stock_level=stock_to_proto(level))

    async def ReserveStock(
        self, request: pb.ReserveStockRequest, context: Context
    ) -> pb.ReserveStockResponse:
        command = reservations.ReserveStock(
            order_id=uuid.UUID(request.order_id.value),
            lines=tuple(ReservationLine(line.sku.value, line.quantity) for line in request.lines),
            ttl=request.ttl.ToTimedelta(),
        )
        reservation = await reservations.reserve_stock(command, self.deps)
        return pb.ReserveStockResponse(reservation=reservation_to_proto(reservation))

    async def CommitReservation(
        self, request: pb.CommitReservationRequest, context: Context
    ) -> pb.CommitReservationResponse:
        order_id = uuid.UUID(request.order_id.value)
        reservation = await reservations.commit_reservation(order_id, self.deps)
        return pb.CommitReservationResponse(reservation=reservation_to_proto(reservation))

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: Context
    ) -> pb.ReleaseReservationResponse:
        reason = pb.ReleaseReason.Name(request.reason).removeprefix("RELEASE_REASON_")
        command = reservations.ReleaseReservation(
            order_id=uuid.UUID(request.order_id.value), reason=ReleaseReason(reason)
        )
        reservation = await reservations.release_reservation(command, self.deps)
        return pb.ReleaseReservationResponse(reservation=reservation_to_proto(reservation))

    async def GetReservation(
        self, request: pb.GetReservationRequest, context: Context
    ) -> pb.GetReservationResponse:
        if request.WhichOneof("lookup") == "order_id":
            query = reservations.FindReservation(order_id=uuid.UUID(request.order_id.value))
        else:
            query = reservations.FindReservation(
                reservation_id=uuid.UUID(request.reservation_id.value)
            )
        found = await reservations.get_reservation(query, self.deps)
        return pb.GetReservationResponse(reservation=reservation_to_proto(found))

    async def AuditStock(
        self, request: pb.AuditStockRequest, context: Context
    ) -> pb.AuditStockResponse:
        audited = await reservations.audit_stock(
            tuple(sku.value for sku in request.skus), self.deps
        )
        response = pb.AuditStockResponse(skus_checked=len(audited))
        for sku in audited:
            if sku.problems:
                response.discrepancies.append(
                    pb.StockDiscrepancy(
                        sku=ids_pb2.Sku(value=sku.sku),
                        recorded=pb.StockLevel(
                            on_hand=sku.on_hand,
                            reserved=sku.reserved,
                            sold=sku.sold,
                            available=sku.on_hand - sku.reserved,
                        ),
                        recomputed=pb.StockLevel(
                            on_hand=sku.ledger_on_hand,
                            reserved=sku.ledger_reserved,
                            sold=sku.ledger_sold,
                            available=sku.ledger_on_hand - sku.ledger_reserved,
                        ),
                        description="; ".join(sku.problems),
                    )
                )
        response.audited_at.GetCurrentTime()
        return response


def stock_to_proto(level: StockLevel) -> pb.StockLevel:
    """The wire form of a stock level."""
    message = pb.StockLevel(
        sku=ids_pb2.Sku(value=level.sku),
        on_hand=level.on_hand,
        reserved=level.reserved,
        available=level.available,
        sold=level.sold,
    )
    if level.updated_at is not None:
        message.updated_at.FromDatetime(level.updated_at)
    return message


def reservation_to_proto(reservation: Reservation) -> pb.Reservation:
    """The wire form of a reservation."""
    message = pb.Reservation(
        reservation_id=ids_pb2.ReservationId(value=str(reservation.reservation_id)),
        order_id=ids_pb2.OrderId(value=str(reservation.order_id)),
        status=pb.ReservationStatus.Value(f"RESERVATION_STATUS_{reservation.status.value}"),
        lines=events.wire_lines(reservation),
        release_reason=events.wire_release_reason(reservation.release_reason),
    )
    message.expires_at.FromDatetime(reservation.expires_at)
    message.created_at.FromDatetime(reservation.created_at)
    if reservation.closed_at is not None:
        message.closed_at.FromDatetime(reservation.closed_at)
    return message
