"""Wire the payment service: settings, database, the PSP adapter, servicer, reconciliation."""

from __future__ import annotations

import logging
from datetime import timedelta

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.payment.v1 import payment_service_pb2, payment_service_pb2_grpc
from marketplace_platform.db import unit_of_work_factory
from marketplace_platform.grpc_server import ServiceRegistration
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.periodic import every
from marketplace_platform.secrets import secret_source
from marketplace_platform.service_main import ServiceFactory, ServiceParts, run_service
from marketplace_platform.settings import ServiceSettings
from services.payment.adapters import tables
from services.payment.adapters.psp import CircuitBreaker, HttpPsp
from services.payment.adapters.unit_of_work import PaymentUnitOfWork
from services.payment.entrypoints.grpc_servicer import PaymentServicer
from services.payment.service_layer import reconciliation
from services.payment.service_layer.deps import PaymentDeps

SERVICE_NAME = payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name

log = logging.getLogger(__name__)


class PaymentSettings(ServiceSettings):
    """Payment's settings."""

    service_name: str = "payment"
    psp_url: str = "http://127.0.0.1:8089"
    # Sent as `Authorization: Bearer`; empty: none (the simulator needs none). With the secret
    # ARN the key is read from Secrets Manager and re-read every SECRETS_TTL_SECONDS.
    psp_api_key: str = ""
    psp_api_key_secret_arn: str | None = None
    secrets_ttl_seconds: float = Field(default=300.0, gt=0)
    psp_timeout_seconds: float = Field(default=2.0, gt=0)
    psp_attempts: int = Field(default=3, ge=1, le=10)
    psp_breaker_failures: int = Field(default=5, ge=1)
    psp_breaker_open_seconds: float = Field(default=5.0, gt=0)
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    # How long an operation's owner may still be retrying it (the saga: about a minute; the
    # shipping consumer: minutes): before that, reconciliation never settles it "not applied".
    reconcile_owner_horizon_seconds: float = Field(default=900.0, gt=0)


def build(settings: PaymentSettings) -> ServiceFactory:
    """The payment gRPC service and its scheduled reconciliation."""

    def parts(engine: AsyncEngine) -> ServiceParts:
        psp = HttpPsp(
            settings.psp_url,
            timeout=settings.psp_timeout_seconds,
            breaker=CircuitBreaker(
                failures_to_open=settings.psp_breaker_failures,
                open_seconds=settings.psp_breaker_open_seconds,
            ),
            api_key=secret_source(
                settings.psp_api_key,
                settings.psp_api_key_secret_arn,
                ttl_seconds=settings.secrets_ttl_seconds,
            ),
        )
        deps = PaymentDeps(
            unit_of_work=unit_of_work_factory(
                engine, OutboxWriter(tables.outbox, producer="payment"), kind=PaymentUnitOfWork
            ),
            psp=psp,
            attempts=settings.psp_attempts,
            owner_horizon=timedelta(seconds=settings.reconcile_owner_horizon_seconds),
        )
        servicer = PaymentServicer(deps)

        reconcile = every(
            settings.reconcile_interval_seconds,
            "reconciliation",
            lambda: reconciliation.reconcile(reconciliation.Reconcile(), deps),
        )

        registration = ServiceRegistration(
            SERVICE_NAME,
            lambda server: payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(
                servicer, server
            ),
        )
        return ServiceParts([registration], background=[reconcile])

    return parts


def main() -> None:
    """Entry point of the payment process."""
    settings = PaymentSettings()
    run_service(settings, "services.payment", build(settings))
