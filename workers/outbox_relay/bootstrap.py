"""Wire the outbox relay process: settings, logs, the bus, the relay loop; SIGTERM stops it."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.db import create_engine
from marketplace_platform.event_bus import EventBus
from marketplace_platform.event_bus.eventbridge import eventbridge_bus
from marketplace_platform.event_bus.local import LocalEventBus
from marketplace_platform.event_bus.rules import load_routing
from marketplace_platform.logs import configure_logging
from marketplace_platform.metrics import serve_metrics
from marketplace_platform.migrations import migrations_dir, upgrade
from marketplace_platform.notifications import Listener
from marketplace_platform.outbox import OUTBOX_CHANNEL
from marketplace_platform.queues.postgres import PostgresQueues
from marketplace_platform.telemetry import configure_tracing
from workers.outbox_relay.gauges import keep_fresh
from workers.outbox_relay.relay import OutboxAnnouncements, OutboxRelay
from workers.outbox_relay.settings import OutboxRelaySettings

log = logging.getLogger(__name__)


def main() -> None:
    """Entry point of `python -m workers.outbox_relay` (the relay loop)."""
    settings = OutboxRelaySettings()
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    uvloop.run(run(settings))


async def _gauges(settings: OutboxRelaySettings, engine: AsyncEngine) -> None:
    queues = None
    if settings.relay_bus == "local":
        routing = load_routing(settings.relay_rules_file).prefixed(settings.relay_queue_prefix)
        queues = PostgresQueues(engine, routing.queues)
    await keep_fresh(
        engine,
        queues,
        schemas=settings.schema_list(),
        interval_seconds=settings.relay_gauges_interval_seconds,
        timeout_seconds=settings.relay_gauges_timeout_seconds,
        stuck_after_seconds=settings.relay_stuck_after_seconds,
    )


def build_bus(settings: OutboxRelaySettings, engine: AsyncEngine) -> EventBus:
    """The local bus into PostgreSQL queues, or EventBridge, as the settings say."""
    routing = load_routing(settings.relay_rules_file).prefixed(settings.relay_queue_prefix)
    if settings.relay_bus == "eventbridge":
        return eventbridge_bus(
            settings.relay_event_bus_name or routing.event_bus_name,
            region=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
        )
    return LocalEventBus(routing, PostgresQueues(engine, routing.queues))


async def run(settings: OutboxRelaySettings) -> None:
    """Relay until SIGTERM or SIGINT; the batch in flight finishes first."""
    if settings.migrate_on_start and settings.relay_bus == "local":
        await asyncio.to_thread(
            upgrade, settings.database_url, migrations_dir("marketplace_platform.queues")
        )
    engine = create_engine(settings)
    listening: list[asyncio.Task[None]] = []
    relay = OutboxRelay(
        engine,
        build_bus(settings, engine),
        schemas=settings.schema_list(),
        batch_size=settings.relay_batch_size,
    )
    if settings.metrics_port and settings.relay_db_gauges:
        listening.append(asyncio.create_task(_gauges(settings, engine), name="db-gauges"))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    announcements: OutboxAnnouncements | None = None
    if settings.relay_wake_on_notify:
        announcements = OutboxAnnouncements()
        schemas = settings.schema_list()
        listener = Listener(
            settings.database_url,
            OUTBOX_CHANNEL,
            announcements,
            payload=schemas[0] if schemas and len(schemas) == 1 else None,
        )
        listening.append(asyncio.create_task(listener.run(), name="outbox-listener"))
    log.info(
        "outbox relay running: %s bus, schemas %s, batches of %d",
        settings.relay_bus,
        settings.schema_list() or "discovered",
        settings.relay_batch_size,
    )
    try:
        await relay.run(
            stopping,
            poll_interval_seconds=settings.relay_poll_interval_seconds,
            lag_log_interval_seconds=settings.relay_lag_log_interval_seconds,
            announcements=announcements,
            batch_window_seconds=settings.relay_batch_window_seconds,
        )
    finally:
        for task in listening:
            task.cancel()
        await asyncio.gather(*listening, return_exceptions=True)
        await engine.dispose()
    log.info("outbox relay stopped")
