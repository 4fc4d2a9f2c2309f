"""Health follows readiness without flapping under load: a readiness probe that fails makes a
server NOT_SERVING at once, one that only times out (queued behind a burst of calls for the
same pool) is ridden out `health_probe_timeouts_tolerated` times in a row. Real servers on the
platform's bootstrap, real health-checked channels, and a real database pool held busy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from marketplace_platform.channels import open_channel
from marketplace_platform.db import create_engine, ping
from marketplace_platform.grpc_server import RunningServer, start_server
from marketplace_platform.settings import ServiceSettings
from tests.integration.test_balanced_channels import Replica, who_method

WITHIN = 10.0
INTERVAL = 0.1
TIMEOUT = 0.2
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Probe:
    """A readiness probe told what to do: pass, fail, or hang past the probe's timeout."""

    def __init__(self) -> None:
        self.mode = "pass"
        self.calls = 0
        self._called = asyncio.Condition()

    async def __call__(self) -> None:
        async with self._called:
            self.calls += 1
            self._called.notify_all()
        if self.mode == "fail":
            raise RuntimeError("told to fail")
        if self.mode == "hang":
            await asyncio.sleep(TIMEOUT * 10)

    async def probes(self, count: int) -> None:
        """Return once `count` more probes have begun."""
        target = self.calls + count
        async with asyncio.timeout(WITHIN), self._called:
            await self._called.wait_for(lambda: self.calls >= target)


def settings(**overrides: Any) -> ServiceSettings:
    return ServiceSettings(
        service_name="who",
        grpc_port=0,
        health_probe_interval_seconds=INTERVAL,
        health_probe_timeout_seconds=TIMEOUT,
        **overrides,
    )


class Statuses:
    """The statuses a health Watch stream reported, in order, and a way to wait for one."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._changed = asyncio.Condition()

    async def add(self, status: int) -> None:
        async with self._changed:
            self.seen.append(status)
            self._changed.notify_all()

    async def until(self, done: Callable[[list[int]], bool], within: float = WITHIN) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: done(self.seen))


@contextlib.asynccontextmanager
async def server(
    readiness: Callable[[], Awaitable[None]], service_settings: ServiceSettings
) -> AsyncIterator[tuple[RunningServer, Statuses]]:
    """A started server and every status its health Watch stream reports, as they come."""
    replica = Replica("lone")
    running = await start_server(service_settings, [replica.registration()], readiness)
    statuses = Statuses()

    async def watch() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)
            async for response in stub.Watch(health_pb2.HealthCheckRequest()):
                await statuses.add(response.status)

    watcher = asyncio.create_task(watch())
    try:
        await statuses.until(bool)
        yield running, statuses
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await watcher
        await running.stop(0.5)


async def test_probes_that_time_out_within_the_tolerance_keep_a_lone_server_serving() -> None:
    probe = Probe()
    async with server(probe, settings(health_probe_timeouts_tolerated=2)) as (running, statuses):
        channel = open_channel(f"127.0.0.1:{running.port}", default_timeout=WITHIN)
        try:
            assert await who_method(channel)(b"", timeout=WITHIN) == b"lone"
            probe.mode = "hang"
            await probe.probes(2)  # both hang past the timeout: the second has just begun
            probe.mode = "pass"
            assert await who_method(channel)(b"", timeout=WITHIN) == b"lone"
            await probe.probes(2)
            assert await who_method(channel)(b"", timeout=WITHIN) == b"lone"
        finally:
            await channel.close()
        assert NOT_SERVING not in statuses.seen


async def test_probes_that_keep_timing_out_make_it_not_serving_until_one_passes() -> None:
    probe = Probe()
    async with server(probe, settings(health_probe_timeouts_tolerated=2)) as (_, statuses):
        probe.mode = "hang"
        await probe.probes(2)
        assert NOT_SERVING not in statuses.seen
        await statuses.until(lambda seen: NOT_SERVING in seen)
        assert probe.calls >= 3
        probe.mode = "pass"
        await statuses.until(lambda seen: seen[-1] == SERVING)


async def test_a_probe_that_fails_makes_it_not_serving_at_once() -> None:
    probe = Probe()
    async with server(probe, settings(health_probe_timeouts_tolerated=5)) as (_, statuses):
        probe.mode = "fail"
        await probe.probes(1)
        await statuses.until(lambda seen: NOT_SERVING in seen, within=TIMEOUT + INTERVAL * 5)


async def test_a_pool_held_by_a_burst_does_not_take_the_server_out(database_url: str) -> None:
    service_settings = settings(
        database_url=database_url, db_pool_size=1, health_probe_timeouts_tolerated=2
    )
    engine = create_engine(service_settings)
    try:
        async with server(lambda: ping(engine), service_settings) as (running, statuses):
            assert statuses.seen[-1] == SERVING

            # The burst: both of the pool's connections (size 1 + overflow 1) busy for longer
            # than two probes' timeouts, as 200 racers for a pool of ten are.
            async def busy() -> None:
                async with engine.connect() as connection:
                    await connection.execute(sa.text("SELECT pg_sleep(:s)"), {"s": TIMEOUT * 2.5})

            await asyncio.gather(busy(), busy())
            channel = open_channel(f"127.0.0.1:{running.port}", default_timeout=WITHIN)
            try:
                assert await who_method(channel)(b"", timeout=WITHIN) == b"lone"
            finally:
                await channel.close()
            assert NOT_SERVING not in statuses.seen
    finally:
        await engine.dispose()
