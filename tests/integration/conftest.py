"""Fixtures of the integration suites: the PSP simulator as a real process, and the services'
gRPC servers in this process on the module's engine (tests/conftest.py has the database,
the engine, Redis and moto)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.grpc_server import RunningServer
from marketplace_platform.saga.local import LocalSagaStarter
from tests.support.keys import unique
from tests.support.psp import RunningPsp, running_psp
from tests.support.servers import ServiceServers


@pytest.fixture(scope="module")
async def psp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningPsp]:
    """The PSP simulator as a real process, for the module."""
    async with running_psp(tmp_path_factory.mktemp("psp")) as running:
        yield running


@pytest.fixture
def machine_name() -> str:
    """A saga state machine name of the test's own, so no test's saga engine runs executions
    another test started."""
    return unique("machine-", 8)


@pytest.fixture(scope="module")
async def grpc_servers(engine: AsyncEngine) -> AsyncIterator[ServiceServers]:
    """Start any service's gRPC server on a free port, on the module's engine unless told;
    every one started stops at the module's end."""
    async with AsyncExitStack() as stack:
        yield ServiceServers(stack, engine)


@pytest.fixture(scope="module")
async def inventory_server(grpc_servers: ServiceServers) -> RunningServer:
    """The inventory service."""
    return await grpc_servers.inventory()


@pytest.fixture(scope="module")
async def checkout_server(
    grpc_servers: ServiceServers,
    engine: AsyncEngine,
    cart_server: RunningServer,
    payment_server: RunningServer,
) -> RunningServer:
    """The checkout service on the module's `cart_server` and `payment_server`. PlaceOrder
    records its saga execution; no saga engine runs it (a test drives the steps, if any)."""
    return await grpc_servers.checkout(
        cart_target=f"127.0.0.1:{cart_server.port}",
        payment_target=f"127.0.0.1:{payment_server.port}",
        ports={"saga": LocalSagaStarter(engine)},
    )
