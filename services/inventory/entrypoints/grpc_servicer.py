"""Inventory's gRPC servicer: proto -> command -> handler -> proto, nothing more.

Field rules were already enforced by the platform's boundary interceptor. RPCs not written yet
answer UNIMPLEMENTED (the generated base class does that).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from marketplace.common.v1 import ids_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from services.inventory.domain.stock import StockLevel
from services.inventory.service_layer import handlers

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class InventoryServicer(pb_grpc.InventoryServiceServicer):
    """Translates InventoryService calls to the inventory handlers."""

    def __init__(self, unit_of_work: handlers.UnitOfWorkFactory) -> None:
        self.unit_of_work = unit_of_work

    async def SetStock(self, request: pb.SetStockRequest, context: Context) -> pb.SetStockResponse:
        command = handlers.SetStock(sku=request.sku.value, on_hand=request.on_hand)
        level = await handlers.set_stock(command, self.unit_of_work())
        return pb.SetStockResponse(stock_level=to_proto(level))

    async def GetStock(self, request: pb.GetStockRequest, context: Context) -> pb.GetStockResponse:
        level = await handlers.get_stock(request.sku.value, self.unit_of_work())
        return pb.GetStockResponse(stock_level=to_proto(level))


def to_proto(level: StockLevel) -> pb.StockLevel:
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
