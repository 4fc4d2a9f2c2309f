"""OpenTelemetry: a tracer provider per process and the gRPC server/client instrumentation.

Tracing is on in a process when it exports spans (`OTEL_TRACES_EXPORTER` console, jsonl or
otlp):
then `configure_tracing` installs a tracer provider sampling `OTEL_TRACES_SAMPLER_ARG` of new
traces (parent-based: a call or event whose caller was sampled is sampled, and one whose caller
was not is not), and the gRPC interceptors record a span per call and carry the trace context
to the next service and, through the outbox, to the event's consumers. With no exporter nothing
is installed: spans are OpenTelemetry's no-ops and the interceptors are left out, since they
would cost every call its bookkeeping for spans nobody reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

from marketplace_platform.settings import TracingSettings
from marketplace_platform.trace_files import JsonLinesSpanExporter


def tracer_provider(settings: TracingSettings) -> TracerProvider | None:
    """The provider the settings ask for: None when no span is exported (tracing off)."""
    if settings.otel_traces_exporter == "none":
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=sampler(settings.otel_traces_sampler_arg),
    )
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    return provider


def sampler(ratio: float) -> Sampler:
    """Sample `ratio` of new traces; a span with a parent follows its parent's decision."""
    return ParentBased(root=TraceIdRatioBased(ratio))


def configure_tracing(settings: TracingSettings) -> None:
    """Install the process's tracer provider when tracing is on; otherwise install nothing."""
    provider = tracer_provider(settings)
    if provider is not None:
        trace.set_tracer_provider(provider)


def installed_provider() -> TracerProvider | None:
    """The tracer provider configure_tracing installed in this process, if it did."""
    provider = trace.get_tracer_provider()
    return provider if isinstance(provider, TracerProvider) else None


def server_tracing_interceptors(
    provider: TracerProvider | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """Continue the caller's trace (traceparent in metadata) and record a span per call; none
    when tracing is off (`provider`: the installed one by default)."""
    provider = provider or installed_provider()
    if provider is None:
        return []
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(tracer_provider=provider)  # type: ignore[no-untyped-call]
    return [_SkippingPlatformServices(interceptor)]


# Health and reflection calls are not part of any request's trace, and OpenTelemetry's aio
# server interceptor breaks grpc-health's Watch (a coroutine writing to the context, not an
# async generator: "'async for' requires an object with __aiter__ method, got coroutine").
_UNTRACED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class _SkippingPlatformServices(grpc.aio.ServerInterceptor):
    """`inner` for every method but the health and reflection services'."""

    def __init__(self, inner: grpc.aio.ServerInterceptor) -> None:
        self._inner = inner

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if handler_call_details.method.startswith(_UNTRACED_PREFIXES):
            return await continuation(handler_call_details)
        return await self._inner.intercept_service(continuation, handler_call_details)


def client_tracing_interceptors(provider: TracerProvider | None = None) -> list[Any]:
    """Start a client span per call and inject the trace context into the metadata; none when
    tracing is off (`provider`: the installed one by default)."""
    provider = provider or installed_provider()
    if provider is None:
        return []
    return list(aio_client_interceptors(tracer_provider=provider))  # type: ignore[no-untyped-call]


def traced_asgi(app: Any, provider: TracerProvider | None = None) -> Any:
    """`app` under a server span per HTTP request (continuing an incoming traceparent), so the
    gateway's upstream gRPC calls are its children; `app` itself when tracing is off."""
    provider = provider or installed_provider()
    if provider is None:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app, tracer_provider=provider)


def trace_http_client(client: Any, provider: TracerProvider | None = None) -> None:
    """A client span per request of the httpx `client`, with traceparent sent; nothing when
    tracing is off."""
    provider = provider or installed_provider()
    if provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.otel_traces_exporter == "console":
        return ConsoleSpanExporter()
    if settings.otel_traces_exporter == "jsonl":
        path = settings.otel_traces_jsonl_dir / f"{settings.service_name}.jsonl"
        return JsonLinesSpanExporter(path)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    exporter: SpanExporter = OTLPSpanExporter()
    return exporter
