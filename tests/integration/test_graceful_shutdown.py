"""SIGTERM on a real service process: the call in flight completes, new calls are refused."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from local_supervisor.embedded import free_port
from tests.support.processes import python_module

WITHIN = 20.0


async def wait_serving(target: str) -> None:
    async with asyncio.timeout(WITHIN), grpc.aio.insecure_channel(target) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)


async def read_until(stream: asyncio.StreamReader, text: str) -> None:
    async with asyncio.timeout(WITHIN):
        while text not in (await stream.readline()).decode():
            pass


def sleep_method(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary("/test.SlowService/Sleep")


async def test_sigterm_drains_the_call_in_flight_and_refuses_new_ones() -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    async with python_module(
        "tests.support.slow_service",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    ) as process:
        assert process.stdout is not None
        await wait_serving(target)
        async with grpc.aio.insecure_channel(target) as channel:
            in_flight = asyncio.ensure_future(sleep_method(channel)(b"2.0", timeout=WITHIN))
            await read_until(process.stdout, "call in flight")

            process.send_signal(signal.SIGTERM)
            await read_until(process.stdout, "shutting down")

            async with grpc.aio.insecure_channel(target) as fresh:
                refused = None
                try:
                    await sleep_method(fresh)(b"0", timeout=5)
                except grpc.aio.AioRpcError as error:
                    refused = error.code()
            assert refused == grpc.StatusCode.UNAVAILABLE
            assert await in_flight == b"2.0"
        async with asyncio.timeout(WITHIN):
            assert await process.wait() == 0
