"""Wire the stock-release consumer: its settings and a channel to the inventory service."""

from __future__ import annotations

from marketplace.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from marketplace_platform.channels import open_channel
from workers.consumers.consumer import Consumer
from workers.consumers.runner import Closer
from workers.consumers.settings import ConsumerSettings
from workers.consumers.stock_release import handlers


class StockReleaseSettings(ConsumerSettings):
    """INVENTORY_TARGET, with the shared consumer settings."""

    service_name: str = "stock-release-consumer"
    consumer_queue: str = "stock-release"
    inventory_target: str = "127.0.0.1:50052"


async def wire(settings: StockReleaseSettings) -> tuple[Consumer, Closer]:
    """The stock-release consumer and a closer for its channel."""
    channel = open_channel(
        settings.inventory_target,
        default_timeout=settings.default_call_timeout_seconds,
        idempotent_services=["marketplace.inventory.v1.InventoryService"],
    )
    stub = inventory_grpc.InventoryServiceStub(channel)
    return Consumer(handlers.CONSUMER, handlers.handlers(stub)), channel.close
