"""gRPC stubs for the adapters: one channel per target, built on first use and kept for the
process (a Lambda container's later invocations reuse it), and a deadline for every call."""

from __future__ import annotations

import functools
import threading
from typing import Any

import grpc

from marketplace.checkout.v1 import checkout_service_pb2_grpc
from marketplace.inventory.v1 import inventory_service_pb2_grpc
from marketplace.payment.v1 import payment_service_pb2_grpc
from marketplace_platform.request_context import REQUEST_ID_HEADER
from saga_tasks.errors import RetryableError
from saga_tasks.settings import AdapterSettings

# No retry policy on the channel: the state machine's Retry is the one layer that retries.
_CHANNEL_OPTIONS = [("grpc.enable_retries", 0), ("grpc.keepalive_time_ms", 30_000)]

_channels: dict[str, grpc.Channel] = {}
_lock = threading.Lock()


@functools.cache
def settings() -> AdapterSettings:
    """The adapters' settings, read on first use."""
    return AdapterSettings()


def channel(target: str) -> grpc.Channel:
    """The process's channel to `target`, created on first use."""
    with _lock:
        if target not in _channels:
            _channels[target] = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        return _channels[target]


def inventory() -> inventory_service_pb2_grpc.InventoryServiceStub:
    """A stub for the inventory service."""
    return inventory_service_pb2_grpc.InventoryServiceStub(channel(settings().inventory_target))


def payment() -> payment_service_pb2_grpc.PaymentServiceStub:
    """A stub for the payment service."""
    return payment_service_pb2_grpc.PaymentServiceStub(channel(settings().payment_target))


def checkout() -> checkout_service_pb2_grpc.CheckoutServiceStub:
    """A stub for the checkout service."""
    return checkout_service_pb2_grpc.CheckoutServiceStub(channel(settings().checkout_target))


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
    """Close every channel and forget the settings (tests that move the services use this)."""
    with _lock:
        for open_channel in _channels.values():
            open_channel.close()
        _channels.clear()
    settings.cache_clear()


def invoke(
    method: grpc.UnaryUnaryMultiCallable[Any, Any],
    request: Any,
    *,
    key: str,
    context: Any,
    limit: float | None = None,
) -> Any:
    """Call `method` with the step's deadline and request id; failures raise grpc.RpcError."""
    return method(request, timeout=deadline(context, limit), metadata=call_metadata(key))
