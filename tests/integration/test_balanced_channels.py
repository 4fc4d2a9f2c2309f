"""Channels balance over every replica of a service and skip the unhealthy ones: real servers on
the platform's bootstrap (health service included), real processes killed with SIGKILL."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from local_supervisor.embedded import free_port
from marketplace_platform.channels import balanced_channel, channel_target, open_channel
from marketplace_platform.grpc_server import RunningServer, ServiceRegistration, start_server
from marketplace_platform.settings import ServiceSettings
from tests.integration.test_graceful_shutdown import sleep_method, wait_serving
from tests.support.processes import python_module

SERVICE = "test.WhoService"
WITHIN = 20.0
CALLS = 20


@dataclass
class Replica:
    """An in-process server that answers with its name while its readiness flag is up."""

    name: str
    ready: bool = True
    running: RunningServer | None = None

    async def readiness(self) -> None:
        if not self.ready:
            raise RuntimeError(f"{self.name} is told to be unready")

    def registration(self) -> ServiceRegistration:
        async def who(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            return self.name.encode()

        def add_to_server(server: grpc.aio.Server) -> None:
            handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(who)
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(SERVICE, {"Who": handler}),)
            )

        return ServiceRegistration(SERVICE, add_to_server)

    @property
    def address(self) -> str:
        assert self.running is not None
        return f"127.0.0.1:{self.running.port}"


@asynccontextmanager
async def replicas(*names: str) -> AsyncIterator[list[Replica]]:
    """Started servers, one per name, whose health follows their readiness every 0.1 s."""
    settings = ServiceSettings(service_name="who", grpc_port=0, health_probe_interval_seconds=0.1)
    started = [Replica(name) for name in names]
    async with AsyncExitStack() as cleanup:
        for replica in started:
            replica.running = await start_server(
                settings, [replica.registration()], replica.readiness
            )
            cleanup.push_async_callback(replica.running.stop, 0.5)
        yield started


def who_method(channel: grpc.aio.Channel) -> Any:
    """The raw-bytes Who method on `channel`."""
    return channel.unary_unary(f"/{SERVICE}/Who")


async def answers(channel: grpc.aio.Channel, calls: int = CALLS) -> Counter[str]:
    """Which replica answered each of `calls` calls made one after the other."""
    who = who_method(channel)
    seen: Counter[str] = Counter()
    for _ in range(calls):
        seen[(await who(b"", timeout=WITHIN, wait_for_ready=True)).decode()] += 1
    return seen


async def eventually(channel: grpc.aio.Channel, expected: set[str]) -> Counter[str]:
    """The answers of a round of calls once exactly `expected` replicas answer them."""
    async with asyncio.timeout(WITHIN):
        while True:
            seen = await answers(channel)
            if set(seen) == expected:
                return seen
            await asyncio.sleep(0.1)


def test_a_list_of_addresses_is_one_ipv4_target_and_one_address_stays_as_it_is() -> None:
    assert channel_target("127.0.0.1:1,127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("127.0.0.1:50051") == "127.0.0.1:50051"
    assert channel_target("checkout:50054") == "checkout:50054"  # DNS: every address of it


async def test_calls_go_round_robin_over_every_replica() -> None:
    async with replicas("a", "b", "c") as servers:
        target = ",".join(replica.address for replica in servers)
        async with open_channel(target, default_timeout=WITHIN) as channel:
            await eventually(channel, {"a", "b", "c"})  # every subchannel connected
            # A round begun while some replicas were still connecting sends the first calls to
            # those already ready; once all are, each round goes over them in turn.
            seen = await answers(channel)
    assert sum(seen.values()) == CALLS
    assert max(seen.values()) - min(seen.values()) <= 1, seen  # in turn, not at random


async def test_a_replica_that_is_not_serving_gets_no_calls_until_it_serves_again() -> None:
    async with (
        replicas("a", "b") as (a, b),
        open_channel(f"{a.address},{b.address}", default_timeout=WITHIN) as channel,
    ):
        await eventually(channel, {"a", "b"})

        b.ready = False  # its health goes NOT_SERVING at the next probe
        assert await eventually(channel, {"a"}) == Counter(a=CALLS)
        await asyncio.sleep(0.5)  # a few more probes: still NOT_SERVING, still no calls
        assert await answers(channel) == Counter(a=CALLS)

        b.ready = True
        await eventually(channel, {"a", "b"})


async def test_no_call_fails_or_waits_while_one_replica_is_healthy() -> None:
    """Not wait_for_ready, and the first call right after the change: a NOT_SERVING replica is
    left out as soon as its health watch says so, not after calls failed on it."""
    async with (
        replicas("a", "b") as (a, b),
        balanced_channel(f"{a.address},{b.address}") as channel,
    ):
        await eventually(channel, {"a", "b"})
        b.ready = False
        await asyncio.sleep(0.5)
        who = who_method(channel)
        seen = Counter([(await who(b"", timeout=1.0)).decode() for _ in range(CALLS)])
    assert seen == Counter(a=CALLS)


@pytest.mark.timeout(60)
async def test_a_replica_killed_with_sigkill_gets_no_more_calls() -> None:
    ports = [free_port(), free_port()]
    async with (
        python_module("tests.support.slow_service", str(ports[0])),
        python_module("tests.support.slow_service", str(ports[1])) as doomed,
    ):
        for port in ports:
            await wait_serving(f"127.0.0.1:{port}")
        # No retry policy on this channel: a call sent to the dead replica would fail.
        async with balanced_channel(",".join(f"127.0.0.1:{p}" for p in ports)) as channel:
            echo = sleep_method(channel)
            for _ in range(CALLS):
                assert await echo(b"0", timeout=WITHIN, wait_for_ready=True) == b"0"

            doomed.send_signal(signal.SIGKILL)
            await doomed.wait()
            await asyncio.sleep(0.5)  # the connection's end reaches the channel
            for _ in range(CALLS):
                assert await echo(b"0", timeout=2.0) == b"0"
