"""Wire the saga engine process: settings, logs, migrations, engine, handlers; SIGTERM stops it."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import uvloop

from marketplace_platform.db import create_engine
from marketplace_platform.logs import configure_logging
from marketplace_platform.metrics import serve_metrics
from marketplace_platform.migrations import migrations_dir, upgrade
from marketplace_platform.notifications import Listener
from marketplace_platform.saga.local import EXECUTIONS_CHANNEL
from marketplace_platform.telemetry import configure_tracing
from workers.saga_engine.asl.machine import StateMachine
from workers.saga_engine.engine import EngineOptions, SagaEngine, default_owner
from workers.saga_engine.settings import SagaEngineSettings
from workers.saga_engine.task_invoker import InProcessTaskInvoker, load_task_handlers

log = logging.getLogger(__name__)


def main() -> None:
    """Entry point of `python -m workers.saga_engine` (the runner)."""
    settings = SagaEngineSettings()
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    uvloop.run(run(settings))


async def run(settings: SagaEngineSettings) -> None:
    """Run the engine until SIGTERM or SIGINT, then finish or release the steps in flight."""
    machine = StateMachine.load(settings.saga_definition)
    invoker = InProcessTaskInvoker(
        load_task_handlers(settings.saga_handlers),
        ThreadPoolExecutor(settings.saga_task_threads, thread_name_prefix="saga-task"),
    )
    missing = invoker.missing(machine.resources())
    if missing:
        raise SystemExit(f"no handler for {sorted(missing)} in {settings.saga_handlers}")
    if settings.migrate_on_start:
        await asyncio.to_thread(
            upgrade, settings.database_url, migrations_dir("marketplace_platform.saga")
        )
    engine = create_engine(settings)
    options = EngineOptions(
        owner=default_owner(),
        state_machine_name=settings.saga_state_machine_name,
        lease_seconds=settings.saga_lease_seconds,
        poll_interval_seconds=settings.saga_poll_interval_seconds,
        max_concurrent_executions=settings.saga_max_concurrent_executions,
    )
    saga_engine = SagaEngine.on(engine, machine, invoker, options)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, saga_engine.stop)
    log.info(
        "saga engine %s running %s (%s) with %s",
        options.owner,
        settings.saga_definition,
        machine.digest,
        settings.saga_handlers,
    )
    listening: list[asyncio.Task[None]] = []
    if settings.saga_wake_on_notify:
        listener = Listener(
            settings.database_url,
            EXECUTIONS_CHANNEL,
            saga_engine.wakeups,
            payload=options.state_machine_name,
        )
        listening.append(asyncio.create_task(listener.run(), name="saga-listener"))
    try:
        await saga_engine.run(grace_seconds=settings.shutdown_grace_seconds)
    finally:
        for task in listening:
            task.cancel()
        await asyncio.gather(*listening, return_exceptions=True)
        await engine.dispose()
    log.info("saga engine %s stopped", options.owner)
