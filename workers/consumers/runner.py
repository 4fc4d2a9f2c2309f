"""Run one consumer as its own process: settings, logs, migrations, queue, loop; SIGTERM stops.

Each consumer's `__main__` calls `main(settings_class, wire)`; `wire` builds the consumer and
whatever it holds (channels, clients) and returns it with a closer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.db import create_engine, unit_of_work_factory
from marketplace_platform.logs import configure_logging
from marketplace_platform.metrics import serve_metrics
from marketplace_platform.migrations import migrations_dir, upgrade
from marketplace_platform.notifications import Listener, Wakeups
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.queues import Queues
from marketplace_platform.telemetry import configure_tracing
from workers.consumers import tables
from workers.consumers.consumer import Consumer
from workers.consumers.loop import ConsumerLoop, LoopOptions
from workers.consumers.settings import ConsumerSettings

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ConsumerSettings)
Closer = Callable[[], Awaitable[None]]
Wire = Callable[[S], Awaitable[tuple[Consumer, Closer]]]


def main(settings_class: type[S], wire: Wire[S]) -> None:
    """Entry point of `python -m workers.consumers.<name>`."""
    settings = settings_class()
    configure_logging(settings.service_name, settings.log_level)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    configure_tracing(settings)
    uvloop.run(run(settings, wire))


def open_queues(settings: ConsumerSettings, engine: AsyncEngine) -> Queues:
    """The queue adapter the settings name, with the queues the rules file declares."""
    from marketplace_platform.queues.definitions import load_queue_definitions

    definitions = load_queue_definitions(settings.event_rules_file)
    if settings.queue_backend == "sqs":
        from marketplace_platform.queues.sqs import sqs_queues

        return sqs_queues(
            definitions,
            region=settings.aws_region,
            endpoint_url=settings.sqs_endpoint_url,
            name_prefix=settings.sqs_queue_prefix,
        )
    from marketplace_platform.queues.postgres import PostgresQueues

    return PostgresQueues(engine, definitions)


async def run(settings: S, wire: Wire[S]) -> None:
    """Consume until SIGTERM or SIGINT, finishing the batch in hand."""
    if settings.migrate_on_start:
        for package in ("workers.consumers", "marketplace_platform.queues"):
            await asyncio.to_thread(upgrade, settings.database_url, migrations_dir(package))
    engine = create_engine(settings)
    consumer, close = await wire(settings)
    producer = OutboxWriter(tables.outbox, producer=consumer.name)
    queue = settings.consumer_queue or consumer.name
    listening: list[asyncio.Task[None]] = []
    wakeups: Wakeups | None = None
    if settings.queue_backend == "postgres" and settings.consumer_wake_on_notify:
        from marketplace_platform.queues.postgres import queue_channel

        wakeups = Wakeups(keep_one=True)
        listener = Listener(settings.database_url, queue_channel(queue), wakeups)
        listening.append(asyncio.create_task(listener.run(), name="queue-listener"))
    loop = ConsumerLoop(
        consumer,
        open_queues(settings, engine),
        queue,
        unit_of_work_factory(engine, producer),
        LoopOptions(
            batch_size=settings.consumer_batch_size,
            wait_seconds=settings.consumer_wait_seconds,
            poll_interval_seconds=settings.consumer_poll_interval_seconds,
            batch_window_seconds=settings.consumer_batch_window_seconds,
            retry_base_seconds=settings.consumer_retry_base_seconds,
            retry_max_seconds=settings.consumer_retry_max_seconds,
            unavailable_base_seconds=settings.consumer_unavailable_base_seconds,
            unavailable_max_seconds=settings.consumer_unavailable_max_seconds,
        ),
        wakeups=wakeups,
    )
    running = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(signum, loop.stop)
    try:
        await loop.run()
    finally:
        for task in listening:
            task.cancel()
        await asyncio.gather(*listening, return_exceptions=True)
        await close()
        await engine.dispose()
    log.info("%s stopped", consumer.name)
