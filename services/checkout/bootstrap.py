"""Wire the checkout service: settings, database, ports to cart, payment and the saga engine,
the servicer, and the background loops that keep every order moving."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.checkout.v1 import checkout_service_pb2, checkout_service_pb2_grpc
from marketplace_platform.channels import open_channel
from marketplace_platform.db import create_engine, unit_of_work_factory
from marketplace_platform.grpc_server import ServiceRegistration
from marketplace_platform.notifications import KeyedWakeups
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.periodic import BackgroundLoop, every
from marketplace_platform.saga import SagaStarter
from marketplace_platform.saga.local import LocalSagaStarter
from marketplace_platform.saga.step_functions import stepfunctions_starter
from marketplace_platform.service_main import (
    ServiceFactory,
    ServiceParts,
    run_service,
)
from marketplace_platform.settings import ServiceSettings
from services.checkout.adapters import cart_client, payment_client, tables
from services.checkout.adapters.settlements import settlement_listener
from services.checkout.adapters.unit_of_work import CheckoutUnitOfWork
from services.checkout.entrypoints.grpc_servicer import CheckoutServicer
from services.checkout.service_layer import housekeeping
from services.checkout.service_layer.deps import CheckoutDeps
from services.checkout.service_layer.ports import CartPort, PaymentPort
from services.checkout.service_layer.settlement_waits import SettlementWaits

SERVICE_NAME = checkout_service_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name


class CheckoutSettings(ServiceSettings):
    """Checkout's settings."""

    service_name: str = "checkout"
    cart_target: str = "127.0.0.1:50051"
    payment_target: str = "127.0.0.1:50053"
    # Deadline of each call to cart (PriceCart, MarkCheckedOut) and payment.
    dependency_timeout_seconds: float = Field(default=3.0, gt=0)
    # How long the first request holds its idempotency key before a retry may take over.
    idempotency_lease_seconds: float = Field(default=30.0, gt=0)
    idempotency_retention_hours: float = Field(default=24.0, ge=24.0)
    saga_backend: Literal["local", "stepfunctions"] = "local"
    saga_state_machine_arn: str = ""
    # The completer starts sagas of orders committed this long ago without a recorded start.
    completer_interval_seconds: float = Field(default=2.0, gt=0)
    completer_grace_seconds: float = Field(default=5.0, ge=0)
    # Orders still PENDING this long after placement are failed with TIMEOUT; longer than the
    # state machine's own TimeoutSeconds (10 minutes), shorter than a reservation's TTL.
    order_timeout_seconds: float = Field(default=780.0, gt=0)
    timeout_sweep_interval_seconds: float = Field(default=30.0, gt=0)
    key_reap_interval_seconds: float = Field(default=600.0, gt=0)
    # A reader endpoint of the same database (Aurora's reader, a streaming replica) for order
    # reads; empty reads everything from DATABASE_URL.
    reader_database_url: str = ""


def build(
    settings: CheckoutSettings,
    *,
    carts: CartPort | None = None,
    payments: PaymentPort | None = None,
    saga: SagaStarter | None = None,
) -> ServiceFactory:
    """The checkout gRPC service and its loops; ports default to the configured gRPC peers."""

    def parts(engine: AsyncEngine) -> ServiceParts:
        outbox = OutboxWriter(tables.outbox, producer="checkout")
        reader_engine = None
        if settings.reader_database_url:
            reader_engine = create_engine(settings, url=settings.reader_database_url)
        deps = CheckoutDeps(
            unit_of_work=unit_of_work_factory(engine, outbox, kind=CheckoutUnitOfWork),
            reader=None
            if reader_engine is None
            else unit_of_work_factory(reader_engine, outbox, kind=CheckoutUnitOfWork),
            carts=carts or _grpc_cart_port(settings),
            payments=payments or _grpc_payment_port(settings),
            saga=saga or saga_starter(settings, engine),
            lease=timedelta(seconds=settings.idempotency_lease_seconds),
        )
        # GetOrder's waiters, woken by one LISTEN per process that runs as a background loop;
        # when the loops stop (shutdown), the waiters answer at once.
        wakeups = KeyedWakeups()
        listener = settlement_listener(settings.database_url, wakeups)
        waits = SettlementWaits(wakeups, listening=listener.listening)

        async def listen() -> None:
            try:
                await listener.run()
            finally:
                waits.stop()

        servicer = CheckoutServicer(deps, settlements=waits)
        registration = ServiceRegistration(
            SERVICE_NAME,
            lambda server: checkout_service_pb2_grpc.add_CheckoutServiceServicer_to_server(
                servicer, server
            ),
        )
        background = [*background_loops(settings, deps), listen]
        return ServiceParts(
            [registration],
            background=background,
            engines=() if reader_engine is None else (reader_engine,),
        )

    return parts


def background_loops(settings: CheckoutSettings, deps: CheckoutDeps) -> list[BackgroundLoop]:
    """The completer, the timeout sweep and the idempotency key reaper."""
    grace = timedelta(seconds=settings.completer_grace_seconds)
    overdue = timedelta(seconds=settings.order_timeout_seconds)
    retention = timedelta(hours=settings.idempotency_retention_hours)
    return [
        every(
            settings.completer_interval_seconds,
            "completer",
            lambda: housekeeping.complete_stranded(older_than=grace, deps=deps),
        ),
        every(
            settings.timeout_sweep_interval_seconds,
            "timeout sweep",
            lambda: housekeeping.fail_overdue(older_than=overdue, deps=deps),
        ),
        every(
            settings.key_reap_interval_seconds,
            "idempotency key reaper",
            lambda: housekeeping.reap_idempotency_keys(retention=retention, deps=deps),
        ),
    ]


def saga_starter(settings: CheckoutSettings, engine: AsyncEngine) -> SagaStarter:
    """The configured saga backend: the local saga engine, or Step Functions."""
    if settings.saga_backend == "stepfunctions":
        if not settings.saga_state_machine_arn:
            raise ValueError("SAGA_BACKEND=stepfunctions needs SAGA_STATE_MACHINE_ARN")
        return stepfunctions_starter(settings.saga_state_machine_arn)
    return LocalSagaStarter(engine)


def _grpc_cart_port(settings: CheckoutSettings) -> CartPort:
    channel = open_channel(
        settings.cart_target,
        default_timeout=settings.dependency_timeout_seconds,
        idempotent_services=[cart_client.SERVICE],
    )
    return cart_client.GrpcCartPort(channel, timeout=settings.dependency_timeout_seconds)


def _grpc_payment_port(settings: CheckoutSettings) -> PaymentPort:
    channel = open_channel(
        settings.payment_target,
        default_timeout=settings.dependency_timeout_seconds,
        idempotent_services=[payment_client.SERVICE],
    )
    return payment_client.GrpcPaymentPort(channel, timeout=settings.dependency_timeout_seconds)


def main() -> None:
    """Entry point of the checkout process."""
    settings = CheckoutSettings()
    run_service(settings, "services.checkout", build(settings))
