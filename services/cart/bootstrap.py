"""Wire the cart service: settings, database and servicer.

Its RPCs are not written yet: the generated base servicer answers UNIMPLEMENTED for each.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.cart.v1 import cart_service_pb2, cart_service_pb2_grpc
from marketplace_platform.grpc_server import ServiceRegistration
from marketplace_platform.service_main import ServiceParts, run_service
from marketplace_platform.settings import ServiceSettings

SERVICE_NAME = cart_service_pb2.DESCRIPTOR.services_by_name["CartService"].full_name


class CartSettings(ServiceSettings):
    """Cart's settings (none of its own yet)."""

    service_name: str = "cart"


def build(engine: AsyncEngine) -> ServiceParts:
    """The cart gRPC service."""
    servicer = cart_service_pb2_grpc.CartServiceServicer()  # type: ignore[abstract]  # UNIMPLEMENTED for now
    return ServiceParts(
        [
            ServiceRegistration(
                SERVICE_NAME,
                lambda server: cart_service_pb2_grpc.add_CartServiceServicer_to_server(
                    servicer, server
                ),
            )
        ]
    )


def main() -> None:
    """Entry point of the cart process."""
    run_service(CartSettings(), "services.cart", build)
