"""`make run`'s supervisor with the real services as real processes: all four SERVING through
gRPC health, reflection lists each service, a SIGKILLed service comes back, SIGTERM stops all."""

from __future__ import annotations

import asyncio
import os
import signal

import psutil
import pytest

from services.cart.bootstrap import SERVICE_NAME as CART
from services.checkout.bootstrap import SERVICE_NAME as CHECKOUT
from services.inventory.bootstrap import SERVICE_NAME as INVENTORY
from services.payment.bootstrap import SERVICE_NAME as PAYMENT
from tests.support.grpc_probes import SERVING, health_status, listed_services
from tests.support.stack import WITHIN, LaunchedStack

pytestmark = pytest.mark.stack

READY_WITHIN = 60.0  # the promise: all four SERVING within 60 s once installed
SERVICE_NAMES = {"cart": CART, "inventory": INVENTORY, "payment": PAYMENT, "checkout": CHECKOUT}


async def test_the_stack_serves_restarts_a_killed_service_and_stops_cleanly(
    stack: LaunchedStack,
) -> None:
    await stack.wait_for_line("all services SERVING", within=READY_WITHIN + 30)

    assert "try it: curl" in await stack.wait_for_line("try it:")
    for name, service in SERVICE_NAMES.items():
        address = stack.grpc_address(name)
        assert await health_status(address, service) == SERVING
        assert service in await listed_services(address)
    pids = {name: stack.pid_of(name) for name in SERVICE_NAMES}
    killed = pids["inventory"]
    assert killed is not None

    os.kill(killed, signal.SIGKILL)
    await stack.wait_for_line("inventory exited with signal SIGKILL; restarting")
    await stack.wait_for_line("inventory is SERVING again")
    restarted = stack.pid_of("inventory")
    assert restarted not in (None, killed)
    assert await health_status(stack.grpc_address("inventory"), INVENTORY) == SERVING

    stack.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(WITHIN):
        assert await stack.process.wait() == 0
    survivors = [pid for pid in [*pids.values(), restarted] if pid and psutil.pid_exists(pid)]
    assert survivors == []
