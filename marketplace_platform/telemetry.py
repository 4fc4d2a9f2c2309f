"""OpenTelemetry: a tracer provider per process and the gRPC server/client instrumentation."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from marketplace_platform.settings import ServiceSettings


def configure_tracing(settings: ServiceSettings) -> None:
    """Install the process's tracer provider with the configured exporter."""
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.otel_traces_exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif settings.otel_traces_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def server_tracing_interceptor() -> grpc.aio.ServerInterceptor:
    """Continues the caller's trace (traceparent in metadata) and records a span per call."""
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor()  # type: ignore[no-untyped-call]
    return interceptor


def client_tracing_interceptors() -> list[Any]:
    """Start a client span per call and inject the trace context into the metadata."""
    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]
