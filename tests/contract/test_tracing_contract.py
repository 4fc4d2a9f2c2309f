"""With tracing on, the trace context crosses a real grpc.aio hop through the platform's
interceptors and reaches what the outbox writes into an event's envelope."""

from __future__ import annotations

import grpc
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider

from marketplace_platform import telemetry

METHOD = "/test.Traced/Call"


def traced(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """The test method on a channel, bytes in and out."""
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
    return call


async def test_with_tracing_on_the_trace_crosses_a_grpc_hop_into_what_the_outbox_carries() -> None:
    provider = TracerProvider(sampler=telemetry.sampler(1.0))
    seen: dict[str, str] = {}

    async def call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        propagate.inject(seen)  # what marketplace_platform.outbox puts in an envelope
        return request

    handler = grpc.method_handlers_generic_handler(
        "test.Traced", {"Call": grpc.unary_unary_rpc_method_handler(call)}
    )
    server = grpc.aio.server(interceptors=telemetry.server_tracing_interceptors(provider))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        interceptors = telemetry.client_tracing_interceptors(provider)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=interceptors) as ch:
            with provider.get_tracer("test").start_as_current_span("checkout") as span:
                await traced(ch)(b"hello", timeout=5)
    finally:
        await server.stop(0)

    trace_id = format(span.get_span_context().trace_id, "032x")
    assert seen["traceparent"].split("-")[1] == trace_id
