"""Wire the payment service: settings, database and servicer.

Its RPCs are not written yet: the generated base servicer answers UNIMPLEMENTED for each.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.payment.v1 import payment_service_pb2, payment_service_pb2_grpc
from marketplace_platform.grpc_server import ServiceRegistration
from marketplace_platform.service_main import ServiceParts, run_service
from marketplace_platform.settings import ServiceSettings

SERVICE_NAME = payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name


class PaymentSettings(ServiceSettings):
    """Payment's settings (none of its own yet)."""

    service_name: str = "payment"


def build(engine: AsyncEngine) -> ServiceParts:
    """The payment gRPC service."""
    servicer = payment_service_pb2_grpc.PaymentServiceServicer()  # type: ignore[abstract]  # UNIMPLEMENTED for now
    return ServiceParts(
        [
            ServiceRegistration(
                SERVICE_NAME,
                lambda server: payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(
                    servicer, server
                ),
            )
        ]
    )


def main() -> None:
    """Entry point of the payment process."""
    run_service(PaymentSettings(), "services.payment", build)
