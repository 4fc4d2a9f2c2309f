"""Prometheus metrics: every series the platform exports, and the HTTP server that serves them.

One module names them all, so a dashboard or a rule has one place to look and two processes
never register the same name twice. Each process serves its own registry on METRICS_PORT
(0: no server); the gauges that need a database query are set by one process only (the outbox
relay's `workers.outbox_relay.gauges`), never by every replica.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

# Request latencies: from a cached cart read (~1 ms) to a checkout under load (seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GRPC_REQUESTS = Counter(
    "checkout_grpc_requests_total",
    "gRPC calls served, by method and status code",
    ["method", "code"],
)
GRPC_LATENCY = Histogram(
    "checkout_grpc_request_duration_seconds",
    "Time to answer a gRPC call, by method",
    ["method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "checkout_http_requests_total",
    "Gateway HTTP requests, by route and status",
    ["route", "status"],
)
HTTP_LATENCY = Histogram(
    "checkout_http_request_duration_seconds",
    "Time to answer a gateway HTTP request, by route",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
CHECKOUTS = Counter("checkout_checkouts_total", "Checkouts started, by outcome", ["outcome"])
SAGA_STATE_LATENCY = Histogram(
    "checkout_saga_state_duration_seconds",
    "Time one saga state took to run (task call included), by state",
    ["state"],
    buckets=LATENCY_BUCKETS,
)
SAGA_STATE_RETRIES = Counter(
    "checkout_saga_state_retries_total", "Retries of a saga state after an error", ["state"]
)
PSP_CALLS = Counter("checkout_psp_calls_total", "Calls to the PSP, by outcome", ["outcome"])
PSP_BREAKER_OPEN = Gauge(
    "checkout_psp_breaker_open", "1 while the PSP circuit breaker is open (calls refused), else 0"
)
RESERVATIONS_EXPIRED = Counter(
    "checkout_reservations_expired_total", "Stock reservations released because they expired"
)
CART_CACHE = Counter(
    "checkout_cart_cache_requests_total",
    "Cart cache lookups, by result (hit, miss, error)",
    ["result"],
)
CART_CACHE_DEGRADED = Gauge(
    "checkout_cart_cache_degraded",
    "1 while the cart cache is unreachable and reads go to the database",
)

# Set by one process from database queries (workers.outbox_relay.gauges).
OUTBOX_UNPUBLISHED = Gauge(
    "checkout_outbox_unpublished", "Outbox rows not yet published, by schema", ["schema"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "checkout_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest unpublished outbox row (0 when none), by schema",
    ["schema"],
)
QUEUE_DEPTH = Gauge(
    "checkout_queue_messages", "Messages in a queue, visible or in flight", ["queue", "dlq"]
)
QUEUE_OLDEST_AGE = Gauge(
    "checkout_queue_oldest_message_age_seconds",
    "Age of a queue's oldest message (0 when empty)",
    ["queue", "dlq"],
)
EXECUTIONS_RUNNING = Gauge("checkout_saga_executions_running", "Saga executions RUNNING")
EXECUTIONS_STUCK = Gauge(
    "checkout_saga_executions_stuck",
    "RUNNING saga executions whose current state was entered longer ago than the bound",
)
EXECUTIONS_PARKED = Gauge(
    "checkout_saga_executions_parked",
    "Saga executions that ended FAILED (a compensation or the confirmation was parked)",
)
GAUGES_SCRAPE_ERRORS = Counter(
    "checkout_db_gauges_errors_total", "Failed refreshes of the database-backed gauges"
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve this process's metrics on http://host:port/metrics (a daemon thread); 0: none."""
    if not port:
        return
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)


Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def measured(method: str, behavior: Handler) -> Handler:
    """Count and time a unary gRPC handler; the code is the one the caller sees."""

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        code = "OK"
        try:
            return await behavior(request, context)
        except BaseException:
            code = _code_name(context.code())
            raise
        finally:
            GRPC_REQUESTS.labels(method, code).inc()
            GRPC_LATENCY.labels(method).observe(time.perf_counter() - started)

    return call


_CODES = {status.value[0]: status.name for status in grpc.StatusCode}


def _code_name(code: object) -> str:
    """A status code's name, whether grpc gives the enum or its number (aio does both)."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    return _CODES.get(code, "UNKNOWN") if isinstance(code, int) else "UNKNOWN"
