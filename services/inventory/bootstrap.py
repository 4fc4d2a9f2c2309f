"""Wire the inventory service: settings, database, unit of work, servicer."""

from __future__ import annotations

import logging

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.inventory.v1 import inventory_service_pb2, inventory_service_pb2_grpc
from marketplace_platform.db import unit_of_work_factory
from marketplace_platform.grpc_server import ServiceRegistration
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.periodic import every
from marketplace_platform.service_main import ServiceFactory, ServiceParts, run_service
from marketplace_platform.settings import ServiceSettings
from services.inventory.adapters import tables
from services.inventory.adapters.unit_of_work import InventoryUnitOfWork
from services.inventory.entrypoints.grpc_servicer import InventoryServicer
from services.inventory.service_layer import reservations
from services.inventory.service_layer.deps import InventoryDeps

log = logging.getLogger(__name__)

SERVICE_NAME = inventory_service_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name


class InventorySettings(ServiceSettings):
    """Inventory's settings."""

    service_name: str = "inventory"
    reservation_sweep_interval_seconds: float = Field(default=5.0, gt=0)
    reservation_sweep_batch: int = Field(default=500, ge=1)


def build(settings: InventorySettings) -> ServiceFactory:
    """The inventory gRPC service and its expiry sweeper, bound to units of work on the engine."""

    def parts(engine: AsyncEngine) -> ServiceParts:
        deps = InventoryDeps(
            unit_of_work=unit_of_work_factory(
                engine, OutboxWriter(tables.outbox, producer="inventory"), kind=InventoryUnitOfWork
            )
        )
        servicer = InventoryServicer(deps)

        sweep = every(
            settings.reservation_sweep_interval_seconds,
            "reservation sweep",
            lambda: reservations.expire_all_due(deps, batch=settings.reservation_sweep_batch),
        )

        registration = ServiceRegistration(
            SERVICE_NAME,
            lambda server: inventory_service_pb2_grpc.add_InventoryServiceServicer_to_server(
                servicer, server
            ),
        )
        return ServiceParts([registration], background=[sweep])

    return parts


def main() -> None:
    """Entry point of the inventory process."""
    settings = InventorySettings()
    run_service(settings, "services.inventory", build(settings))
