"""The grpc.aio server bootstrap every service uses.

Health checking (SERVING only while the readiness probe passes, e.g. the database's writer
answers: a standby or a read-only server is not enough, see marketplace_platform.db.ping),
reflection, the boundary interceptors and OpenTelemetry's (only while tracing is on), and
graceful shutdown on SIGTERM: health goes NOT_SERVING, in-flight calls drain within the grace
period, then the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from marketplace_platform.interceptors import ServiceBoundaryInterceptor
from marketplace_platform.periodic import BackgroundLoop
from marketplace_platform.settings import ServiceSettings
from marketplace_platform.telemetry import server_tracing_interceptors

log = logging.getLogger(__name__)

ReadinessProbe = Callable[[], Awaitable[None]]
"""Returns when the service can do its job; raises (or times out) when it cannot."""

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class ServiceRegistration:
    """One gRPC service to expose: its full name and how to add its servicer to a server.

    `use_health`, when given, receives the server's health servicer, so a service can report
    extra health names of its own (e.g. a degraded cache) next to the ones the server manages.
    """

    name: str
    add_to_server: Callable[[grpc.aio.Server], None]
    use_health: Callable[[HealthServicer], None] | None = None


@dataclass
class RunningServer:
    """A started server: its bound port, health servicer and readiness loop."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    boundary: ServiceBoundaryInterceptor
    service_names: tuple[str, ...]
    _probe_task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def stop(self, grace: float) -> None:
        """Refuse new calls, go NOT_SERVING, let in-flight calls finish within grace, stop."""
        self.boundary.start_draining()
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        await self.health.enter_graceful_shutdown()
        try:
            async with asyncio.timeout(grace):
                await self.boundary.wait_idle()
        except TimeoutError:
            log.warning("calls still in flight after %.1fs; cancelling them", grace)
        await self.server.stop(0)


async def start_server(
    settings: ServiceSettings,
    services: Sequence[ServiceRegistration],
    readiness: ReadinessProbe,
) -> RunningServer:
    """Build, bind and start the server; health follows the readiness probe from then on."""
    boundary = ServiceBoundaryInterceptor()
    server = grpc.aio.server(
        interceptors=[*server_tracing_interceptors(), boundary],
        options=[("grpc.so_reuseport", 0)],
    )
    for service in services:
        service.add_to_server(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for service in services:
        if service.use_health is not None:
            service.use_health(health)
    names = tuple(s.name for s in services)
    reflection.enable_server_reflection(
        (
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    running = RunningServer(
        server=server, port=port, health=health, boundary=boundary, service_names=names
    )
    ready = await _probe(readiness, settings.health_probe_timeout_seconds) is _Probe.PASSED
    await _report_health(running, ready)
    await server.start()
    running._probe_task = asyncio.create_task(
        _follow_readiness(running, readiness, settings, ready=ready)
    )
    log.info("%s listening on %s:%d", settings.service_name, settings.grpc_host, port)
    return running


async def serve_until_signalled(
    settings: ServiceSettings,
    services: Sequence[ServiceRegistration],
    readiness: ReadinessProbe,
    background: Sequence[BackgroundLoop] = (),
) -> None:
    """Run the server (and any background loops, e.g. a sweeper) until SIGTERM or SIGINT,
    then stop the loops and shut the server down gracefully."""
    running = await start_server(settings, services, readiness)
    loops = [asyncio.create_task(loop()) for loop in background]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info(
        "%s shutting down: draining for up to %.1fs",
        settings.service_name,
        settings.shutdown_grace_seconds,
    )
    for loop_task in loops:
        loop_task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    await running.stop(settings.shutdown_grace_seconds)
    log.info("%s stopped", settings.service_name)


class _Probe(enum.Enum):
    """How one readiness probe ended."""

    PASSED = "passed"
    FAILED = "failed"  # a dependency said no: the writer is gone, read-only, fenced, refused
    TIMED_OUT = "timed out"  # no answer in time: down, or only busy (a pool taken by a burst)


async def _probe(readiness: ReadinessProbe, limit_seconds: float) -> _Probe:
    try:
        async with asyncio.timeout(limit_seconds):
            await readiness()
    except TimeoutError:
        log.warning("readiness probe timed out after %.1fs", limit_seconds)
        return _Probe.TIMED_OUT
    except Exception as error:  # any failure of a dependency means not ready
        log.warning("readiness probe failed: %r", error)
        return _Probe.FAILED
    return _Probe.PASSED


async def _report_health(running: RunningServer, ready: bool) -> None:
    status = SERVING if ready else NOT_SERVING
    for name in ("", *running.service_names):
        await running.health.set(name, status)


async def _follow_readiness(
    running: RunningServer, readiness: ReadinessProbe, settings: ServiceSettings, *, ready: bool
) -> None:
    """Probe every interval and report the result. A probe that fails makes the server
    NOT_SERVING at once; one that only times out does so once more than
    `health_probe_timeouts_tolerated` have timed out in a row while SERVING, since a probe
    queued behind a burst of calls for the same pool says the service is busy, not gone, and
    a lone replica taken out for being busy fails every call until the next probe."""
    timeouts = 0
    while True:
        await asyncio.sleep(settings.health_probe_interval_seconds)
        outcome = await _probe(readiness, settings.health_probe_timeout_seconds)
        timeouts = timeouts + 1 if outcome is _Probe.TIMED_OUT else 0
        if outcome is _Probe.PASSED:
            now_ready = True
        elif outcome is _Probe.FAILED:
            now_ready = False
        else:
            now_ready = ready and timeouts <= settings.health_probe_timeouts_tolerated
        if now_ready != ready:
            log.warning(
                "%s is now %s", settings.service_name, "SERVING" if now_ready else "NOT_SERVING"
            )
        ready = now_ready
        await _report_health(running, ready)
