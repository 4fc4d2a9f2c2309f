"""A tiny service on the platform's server bootstrap with one slow method, run as a real
process by the shutdown tests: `python -m tests.support.slow_service PORT`."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc

from marketplace_platform.grpc_server import ServiceRegistration, serve_until_signalled
from marketplace_platform.logs import configure_logging
from marketplace_platform.settings import ServiceSettings

SERVICE = "test.SlowService"


async def sleep_then_echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    """Announce the call on stdout, sleep the requested seconds, echo the request."""
    print("call in flight", flush=True)
    await asyncio.sleep(float(request.decode()))
    return request


def add_to_server(server: grpc.aio.Server) -> None:
    """Register the raw-bytes Sleep method."""
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
        sleep_then_echo
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Sleep": handler}),)
    )


async def always_ready() -> None:
    """This service depends on nothing."""


def main() -> None:
    """Serve until SIGTERM."""
    settings = ServiceSettings(
        service_name="slow", grpc_port=int(sys.argv[1]), shutdown_grace_seconds=10
    )
    configure_logging("slow")
    registration = ServiceRegistration(SERVICE, add_to_server)
    asyncio.run(serve_until_signalled(settings, [registration], always_ready))


if __name__ == "__main__":
    main()
