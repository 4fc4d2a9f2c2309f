"""Client channels to our own services: deadlines on every call, retries only where safe."""

from __future__ import annotations

import json
from collections.abc import Iterable

import grpc

from marketplace_platform.interceptors import DeadlineAndRequestIdInterceptor
from marketplace_platform.telemetry import client_tracing_interceptors

# Retries happen here and only here: on UNAVAILABLE (nothing reached the handler, or the
# server was shutting down), with capped exponential backoff; gRPC randomizes each backoff.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config(idempotent_services: Iterable[str]) -> str:
    """A gRPC service config that retries the given (fully qualified) services' methods.

    Pass only services whose every method is idempotent: reads, and mutations that carry an
    idempotency_key, which is all of ours.
    """
    names = [{"service": name} for name in idempotent_services]
    config = {"methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}]} if names else {}
    return json.dumps(config)


def open_channel(
    target: str,
    *,
    default_timeout: float,
    idempotent_services: Iterable[str] = (),
) -> grpc.aio.Channel:
    """An insecure channel (inside the VPC / on loopback) with deadline, tracing and retries."""
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(idempotent_services)),
        ("grpc.keepalive_time_ms", 30_000),
        # A dependency that restarts (a deploy, a crash, a lost zone) is reconnected within
        # seconds; gRPC's default backoff grows to 2 minutes of refusing calls at once.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]
    interceptors = [
        DeadlineAndRequestIdInterceptor(default_timeout),
        *client_tracing_interceptors(),
    ]
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
