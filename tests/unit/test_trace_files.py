"""The jsonl span exporter's lines read back as OTLP/JSON (hex ids, parents, service name), and
a log line written inside a span carries that span's trace id and span id."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Tracer

from marketplace_platform import logs
from marketplace_platform.trace_files import JsonLinesSpanExporter, read_spans


def _provider(path: Path) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "cart"}))
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    return provider


def test_spans_read_back_with_hex_ids_their_parent_and_service(tmp_path: Path) -> None:
    tracer = _provider(tmp_path / "traces" / "cart.jsonl").get_tracer("test")
    with tracer.start_as_current_span("outer") as outer, tracer.start_as_current_span("inner"):
        pass
    spans = {span["name"]: span for span in read_spans(tmp_path / "traces")}
    context = outer.get_span_context()
    assert spans["outer"]["traceId"] == format(context.trace_id, "032x")
    assert spans["outer"]["spanId"] == format(context.span_id, "016x")
    assert spans["inner"]["parentSpanId"] == spans["outer"]["spanId"]
    assert {span["service"] for span in spans.values()} == {"cart"}
    # One ExportTraceServiceRequest per line: two spans, each its own batch here.
    lines = (tmp_path / "traces" / "cart.jsonl").read_text().splitlines()
    assert [list(json.loads(line)) for line in lines] == [["resourceSpans"]] * 2


def test_a_log_line_in_a_span_carries_its_trace_and_span_ids(tmp_path: Path) -> None:
    tracer = _provider(tmp_path / "cart.jsonl").get_tracer("test")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure_logging("cart")
    try:
        _log_twice_and_check(tracer)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def _log_twice_and_check(tracer: Tracer) -> None:
    out = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    log = logging.getLogger("test")
    log.info("outside")
    with tracer.start_as_current_span("work") as span:
        log.info("inside")
    outside, inside = (json.loads(line) for line in out.getvalue().splitlines())
    assert (outside["trace_id"], outside["span_id"]) == (None, None)
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
