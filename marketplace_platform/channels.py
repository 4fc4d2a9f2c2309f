"""Client channels to our own services: deadlines on every call, retries only where safe, and
calls balanced over every replica of a service that is healthy."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

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
# Every call goes to the next replica in turn, among those whose health service answers
# SERVING for the server as a whole ("", which every service of ours reports next to its own
# names): a replica that is NOT_SERVING, draining or gone gets no calls until it is back.
BALANCING = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
}
ADDRESS_SEPARATOR = ","


def channel_target(target: str) -> str:
    """The gRPC target for a `*_TARGET` setting: one address or name as it is (a DNS name's
    every address is balanced over), several `host:port` IPv4 addresses separated by commas
    (one per replica, as the local supervisor writes them) as one `ipv4:` target."""
    addresses = [address.strip() for address in target.split(ADDRESS_SEPARATOR)]
    if len(addresses) == 1:
        return addresses[0]
    return "ipv4:" + ADDRESS_SEPARATOR.join(addresses)


def service_config(idempotent_services: Iterable[str] = ()) -> str:
    """A gRPC service config that balances over healthy replicas and retries the given (fully
    qualified) services' methods.

    Pass only services whose every method is idempotent: reads, and mutations that carry an
    idempotency_key, which is all of ours.
    """
    names = [{"service": name} for name in idempotent_services]
    config: dict[str, Any] = dict(BALANCING)
    if names:
        config["methodConfig"] = [{"name": names, "retryPolicy": RETRY_POLICY}]
    return json.dumps(config)


def balanced_channel(
    target: str,
    *,
    idempotent_services: Iterable[str] = (),
    options: Iterable[tuple[str, Any]] = (),
    interceptors: Iterable[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """An insecure channel (inside the VPC / on loopback) to every replica behind `target`,
    balanced over the healthy ones; `options` add to (or override) the balancing's."""
    merged = {"grpc.service_config": service_config(idempotent_services), **dict(options)}
    return grpc.aio.insecure_channel(
        channel_target(target), options=list(merged.items()), interceptors=list(interceptors)
    )


def open_channel(
    target: str,
    *,
    default_timeout: float,
    idempotent_services: Iterable[str] = (),
) -> grpc.aio.Channel:
    """A balanced channel (balanced_channel) with deadline, tracing and retries."""
    options = [
        ("grpc.enable_retries", 1),
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
    return balanced_channel(
        target,
        idempotent_services=idempotent_services,
        options=options,
        interceptors=interceptors,
    )
