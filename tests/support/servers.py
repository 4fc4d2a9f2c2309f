"""The services' gRPC servers started in the test process, each on a free port, on a given
engine: the one way every integration module starts them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.db import ping
from marketplace_platform.grpc_server import ReadinessProbe, RunningServer, start_server
from marketplace_platform.service_main import ServiceFactory
from marketplace_platform.settings import ServiceSettings
from services.cart import bootstrap as cart
from services.checkout import bootstrap as checkout
from services.inventory import bootstrap as inventory
from services.payment import bootstrap as payment


@asynccontextmanager
async def serving(
    settings: ServiceSettings,
    factory: ServiceFactory,
    engine: AsyncEngine,
    *,
    ready: ReadinessProbe | None = None,
    background: bool = False,
) -> AsyncIterator[RunningServer]:
    """Serve what `factory` builds on `engine` until the block ends (health follows `ready`,
    by default a ping of the engine); with `background`, its background loops run too, as in
    production."""
    parts = factory(engine)
    running = await start_server(settings, parts.services, ready or (lambda: ping(engine)))
    loops = [asyncio.create_task(loop()) for loop in parts.background] if background else []
    try:
        yield running
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await running.stop(1)
        for own in parts.engines:
            await own.dispose()


class ServiceServers:
    """Starts services' servers (port 0) on an engine, the default one unless told; all of
    them stop, last started first, when `stack` closes."""

    def __init__(self, stack: AsyncExitStack, engine: AsyncEngine) -> None:
        self.stack = stack
        self.engine = engine

    async def start(
        self,
        settings: ServiceSettings,
        factory: ServiceFactory,
        *,
        engine: AsyncEngine | None = None,
        ready: ReadinessProbe | None = None,
        background: bool = False,
    ) -> RunningServer:
        """Serve what `factory` builds until the stack closes."""
        return await self.stack.enter_async_context(
            serving(settings, factory, engine or self.engine, ready=ready, background=background)
        )

    async def cart(
        self,
        *,
        redis_url: str,
        engine: AsyncEngine | None = None,
        ready: ReadinessProbe | None = None,
        **values: Any,
    ) -> RunningServer:
        settings = cart.CartSettings(**{"grpc_port": 0, "redis_url": redis_url, **values})
        return await self.start(settings, cart.build(settings), engine=engine, ready=ready)

    async def inventory(
        self,
        *,
        engine: AsyncEngine | None = None,
        ready: ReadinessProbe | None = None,
        **values: Any,
    ) -> RunningServer:
        settings = inventory.InventorySettings(**{"grpc_port": 0, **values})
        return await self.start(settings, inventory.build(settings), engine=engine, ready=ready)

    async def payment(
        self,
        *,
        engine: AsyncEngine | None = None,
        ready: ReadinessProbe | None = None,
        **values: Any,
    ) -> RunningServer:
        settings = payment.PaymentSettings(**{"grpc_port": 0, **values})
        return await self.start(settings, payment.build(settings), engine=engine, ready=ready)

    async def checkout(
        self,
        *,
        engine: AsyncEngine | None = None,
        ready: ReadinessProbe | None = None,
        ports: dict[str, Any] | None = None,
        **values: Any,
    ) -> RunningServer:
        """The checkout service; `ports` replaces its cart, payments or saga port."""
        settings = checkout.CheckoutSettings(**{"grpc_port": 0, **values})
        factory = checkout.build(settings, **(ports or {}))
        return await self.start(settings, factory, engine=engine, ready=ready)
