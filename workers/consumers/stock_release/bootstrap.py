"""Wire the stock-release consumer: its settings and a channel to the inventory service."""

from __future__ import annotations

from marketplace.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from workers.consumers.consumer import Consumer
from workers.consumers.runner import Closer
from workers.consumers.settings import ConsumerSettings, service_channel
from workers.consumers.stock_release import handlers

INVENTORY_SERVICE = "marketplace.inventory.v1.InventoryService"


class StockReleaseSettings(ConsumerSettings):
    """INVENTORY_TARGET, with the shared consumer settings."""

    service_name: str = "stock-release-consumer"
    consumer_queue: str = "stock-release"
    inventory_target: str = "127.0.0.1:50052"


async def wire(settings: StockReleaseSettings) -> tuple[Consumer, Closer]:
    """The stock-release consumer and a closer for its channel."""
    channel = service_channel(settings, settings.inventory_target, INVENTORY_SERVICE)
    stub = inventory_grpc.InventoryServiceStub(channel)
    return Consumer(handlers.CONSUMER, handlers.handlers(stub)), channel.close
