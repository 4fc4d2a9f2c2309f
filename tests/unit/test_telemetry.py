"""Tracing costs nothing when it is off: no exporter, no provider and no gRPC interceptors; with
one, the interceptors and a parent-based sampler at OTEL_TRACES_SAMPLER_ARG. (The trace crossing
a real gRPC hop with tracing on: tests/contract/test_tracing_contract.py.)"""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import ValidationError

from marketplace_platform import telemetry
from marketplace_platform.settings import ServiceSettings


def settings(**values: object) -> ServiceSettings:
    return ServiceSettings.model_validate({"service_name": "test", **values})


def test_without_an_exporter_tracing_is_off_and_costs_no_interceptor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert telemetry.tracer_provider(settings(otel_traces_exporter="none")) is None
    monkeypatch.setattr(telemetry, "installed_provider", lambda: None)

    assert telemetry.server_tracing_interceptors() == []
    assert telemetry.client_tracing_interceptors() == []


def test_with_an_exporter_there_is_a_provider_and_the_interceptors() -> None:
    provider = telemetry.tracer_provider(settings(otel_traces_exporter="console"))

    assert isinstance(provider, TracerProvider)
    assert len(telemetry.server_tracing_interceptors(provider)) == 1
    assert len(telemetry.client_tracing_interceptors(provider)) >= 1
    provider.shutdown()


def test_the_sampling_ratio_is_read_from_otel_traces_sampler_arg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert ServiceSettings().otel_traces_sampler_arg == 0.25
    assert ServiceSettings.model_fields["otel_traces_sampler_arg"].default == 1.0
    for wrong in (-0.1, 1.5):
        with pytest.raises(ValidationError):
            settings(otel_traces_sampler_arg=wrong)


def test_new_traces_are_sampled_at_the_ratio_and_children_follow_their_parent() -> None:
    never = TracerProvider(sampler=telemetry.sampler(0.0)).get_tracer("test")
    always = TracerProvider(sampler=telemetry.sampler(1.0)).get_tracer("test")

    assert not never.start_span("new trace").is_recording()
    assert always.start_span("new trace").is_recording()
    for flags, recorded in ((TraceFlags.SAMPLED, True), (TraceFlags.DEFAULT, False)):
        remote = SpanContext(trace_id=7, span_id=9, is_remote=True, trace_flags=TraceFlags(flags))
        parent = trace.set_span_in_context(NonRecordingSpan(remote))
        assert never.start_span("child", context=parent).is_recording() is recorded
        assert always.start_span("child", context=parent).is_recording() is recorded
