"""One entry point for every gRPC service process: settings, logs, tracing, migrations, serve."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.db import create_engine, ping
from marketplace_platform.grpc_server import ServiceRegistration, serve_until_signalled
from marketplace_platform.logs import configure_logging
from marketplace_platform.metrics import serve_metrics
from marketplace_platform.migrations import migrations_dir, upgrade
from marketplace_platform.periodic import BackgroundLoop
from marketplace_platform.settings import ServiceSettings
from marketplace_platform.telemetry import configure_tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceParts:
    """What a service's bootstrap builds: its gRPC services and any background loops."""

    services: Sequence[ServiceRegistration]
    background: Sequence[BackgroundLoop] = ()
    # Engines of its own besides the service's (e.g. a reader endpoint), disposed at the end.
    engines: Sequence[AsyncEngine] = ()


ServiceFactory = Callable[[AsyncEngine], ServiceParts]


def run_service(settings: ServiceSettings, package: str, build: ServiceFactory) -> None:
    """Run a service process until SIGTERM: the body of each service's __main__."""
    configure_logging(settings.service_name, settings.log_level)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    configure_tracing(settings)
    uvloop.run(_serve(settings, package, build))


async def _serve(settings: ServiceSettings, package: str, build: ServiceFactory) -> None:
    if settings.migrate_on_start:
        await asyncio.to_thread(upgrade, settings.database_url, migrations_dir(package))
        log.info("%s schema is up to date", settings.service_name)
    engine = create_engine(settings)
    parts = None
    try:
        parts = build(engine)
        # Ready while a writer answers: NOT_SERVING through a failover, SERVING once the
        # endpoint reaches the new writer (the engine reconnects by itself).
        await serve_until_signalled(
            settings, parts.services, readiness=lambda: ping(engine), background=parts.background
        )
    finally:
        for own in parts.engines if parts is not None else ():
            await own.dispose()
        await engine.dispose()
