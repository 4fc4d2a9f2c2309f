"""gRPC stubs for the adapters: one `grpc.aio` channel per target and event loop, built on first
use and kept (a Lambda container's later invocations, and the saga engine's every call, reuse
it), and a deadline for every call.

Each step is an async core, `run(event, context)`, that the local saga engine awaits on its own
loop; `blocking(run)` is the same step as the `handler(event, context)` a Lambda (or a thread)
calls, run on that thread's own loop, which is kept with its channels between invocations.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from marketplace.checkout.v1 import checkout_service_pb2_grpc
from marketplace.inventory.v1 import inventory_service_pb2_grpc
from marketplace.payment.v1 import payment_service_pb2_grpc
from marketplace_platform.channels import balanced_channel
from marketplace_platform.request_context import REQUEST_ID_HEADER
from marketplace_platform.telemetry import client_tracing_interceptors
from saga_tasks.errors import RetryableError
from saga_tasks.settings import AdapterSettings

# No retry policy on the channel: the state machine's Retry is the one layer that retries.
_CHANNEL_OPTIONS = [("grpc.enable_retries", 0), ("grpc.keepalive_time_ms", 30_000)]

# A grpc.aio channel belongs to the loop it was made on; a loop's channels go with it.
_channels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, grpc.aio.Channel]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()
_thread = threading.local()

StepCore = Callable[[dict[str, Any], Any], Awaitable[dict[str, Any]]]


@functools.cache
def settings() -> AdapterSettings:
    """The adapters' settings, read on first use."""
    return AdapterSettings()


def channel(target: str) -> grpc.aio.Channel:
    """The running loop's channel to `target` (balanced over its replicas), made on first use."""
    loop = asyncio.get_running_loop()
    with _lock:
        by_target = _channels.setdefault(loop, {})
        if target not in by_target:
            # The tracing interceptors (none when tracing is off) carry the state span's trace.
            by_target[target] = balanced_channel(
                target, options=_CHANNEL_OPTIONS, interceptors=client_tracing_interceptors()
            )
        return by_target[target]


def inventory() -> inventory_service_pb2_grpc.InventoryServiceAsyncStub:
    """A stub for the inventory service."""
    return inventory_service_pb2_grpc.InventoryServiceStub(channel(settings().inventory_target))


def payment() -> payment_service_pb2_grpc.PaymentServiceAsyncStub:
    """A stub for the payment service."""
    return payment_service_pb2_grpc.PaymentServiceStub(channel(settings().payment_target))


def checkout() -> checkout_service_pb2_grpc.CheckoutServiceAsyncStub:
    """A stub for the checkout service."""
    return checkout_service_pb2_grpc.CheckoutServiceStub(channel(settings().checkout_target))


def blocking(core: StepCore) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda-style `handler(event, context)` of a step's async core: it runs the core on
    the calling thread's own event loop, kept (with its channels) for the thread's next call."""

    @functools.wraps(core)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        loop: asyncio.AbstractEventLoop | None = getattr(_thread, "loop", None)
        if loop is None:
            loop = _thread.loop = asyncio.new_event_loop()
        return loop.run_until_complete(core(event, context))

    return handler


def deadline(context: Any, limit: float | None = None) -> float:
    """Seconds the call may take: the setting, never past the invocation's remaining time."""
    config = settings()
    timeout = config.call_timeout_seconds if limit is None else limit
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        timeout = min(timeout, remaining() / 1000 - config.deadline_margin_seconds)
    if timeout <= 0:
        raise RetryableError("no time left in this invocation to call the service")
    return timeout


def call_metadata(idempotency_key: str) -> tuple[tuple[str, str], ...]:
    """Metadata for a step's call: the step's own key is its request id in every log line."""
    return ((REQUEST_ID_HEADER, idempotency_key),)


def reset() -> None:
    """Forget every channel and the settings (tests that move the services use this). The
    running loop's channels are closed in the background; other loops' go with their loop."""
    with _lock:
        owned = list(_channels.items())
        _channels.clear()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for loop, by_target in owned:
        for open_channel in by_target.values():
            if loop is running:
                loop.create_task(open_channel.close())
            elif running is None and not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(open_channel.close())
    settings.cache_clear()


async def invoke(
    method: Any,
    request: Any,
    *,
    key: str,
    context: Any,
    limit: float | None = None,
) -> Any:
    """Call `method` with the step's deadline and request id; failures raise grpc.RpcError."""
    return await method(request, timeout=deadline(context, limit), metadata=call_metadata(key))
