"""Wire the checkout service: settings, database and servicer.

Its RPCs are not written yet: the generated base servicer answers UNIMPLEMENTED for each.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.checkout.v1 import checkout_service_pb2, checkout_service_pb2_grpc
from marketplace_platform.grpc_server import ServiceRegistration
from marketplace_platform.service_main import ServiceParts, run_service
from marketplace_platform.settings import ServiceSettings

SERVICE_NAME = checkout_service_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name


class CheckoutSettings(ServiceSettings):
    """Checkout's settings (none of its own yet)."""

    service_name: str = "checkout"


def build(engine: AsyncEngine) -> ServiceParts:
    """The checkout gRPC service."""
    servicer = checkout_service_pb2_grpc.CheckoutServiceServicer()  # type: ignore[abstract]  # UNIMPLEMENTED for now
    return ServiceParts(
        [
            ServiceRegistration(
                SERVICE_NAME,
                lambda server: checkout_service_pb2_grpc.add_CheckoutServiceServicer_to_server(
                    servicer, server
                ),
            )
        ]
    )


def main() -> None:
    """Entry point of the checkout process."""
    run_service(CheckoutSettings(), "services.checkout", build)
