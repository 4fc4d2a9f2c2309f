"""Wire the inventory service: settings, database, unit of work, servicer."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.inventory.v1 import inventory_service_pb2, inventory_service_pb2_grpc
from marketplace_platform.db import unit_of_work_factory
from marketplace_platform.grpc_server import ServiceRegistration
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.service_main import run_service
from marketplace_platform.settings import ServiceSettings
from services.inventory.adapters import tables
from services.inventory.entrypoints.grpc_servicer import InventoryServicer

SERVICE_NAME = inventory_service_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name


class InventorySettings(ServiceSettings):
    """Inventory's settings (none of its own yet)."""

    service_name: str = "inventory"


def build(engine: AsyncEngine) -> Sequence[ServiceRegistration]:
    """The inventory gRPC service, bound to a unit of work on the engine."""
    outbox = OutboxWriter(tables.outbox, producer="inventory")
    # Reservations are not written yet: those RPCs answer UNIMPLEMENTED.
    servicer = InventoryServicer(unit_of_work_factory(engine, outbox))  # type: ignore[abstract]
    return [
        ServiceRegistration(
            SERVICE_NAME,
            lambda server: inventory_service_pb2_grpc.add_InventoryServiceServicer_to_server(
                servicer, server
            ),
        )
    ]


def main() -> None:
    """Entry point of the inventory process."""
    run_service(InventorySettings(), "services.inventory", build)
