"""A span exporter that writes OTLP/JSON lines to a file: tracing locally with no collector.

Each batch the BatchSpanProcessor hands over becomes one line holding an OTLP
ExportTraceServiceRequest in its JSON mapping (the same bytes a collector's file exporter
writes), so the file can be read back line by line, or replayed to any OTLP endpoint.
The encoding is OpenTelemetry's own (opentelemetry-exporter-otlp-proto-common) rendered by
protobuf's json_format; the ids are then turned from protobuf's base64 into the hex strings
the OTLP/JSON mapping specifies.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class JsonLinesSpanExporter(SpanExporter):
    """Append each exported batch to `path` as one OTLP/JSON line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        request = encode_spans(spans)
        document = _hex_ids(json_format.MessageToDict(request))
        line = json.dumps(document, separators=(",", ":"))
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing held open: each batch opens and closes the file."""


_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def _hex_ids(value: Any) -> Any:
    """`value` with every trace/span id rendered as lowercase hex (OTLP/JSON), not base64."""
    if isinstance(value, dict):
        return {
            key: base64.b64decode(item).hex() if key in _ID_KEYS else _hex_ids(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(item) for item in value]
    return value


def read_spans(directory: Path, *, trace_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Every span in the `*.jsonl` files under `directory` (only those of `trace_id`, when
    given: a line that does not name it is skipped unparsed), each with its `service.name`
    added under "service" (the resource attribute it was exported with)."""
    for path in sorted(directory.glob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if not line.strip() or (trace_id is not None and trace_id not in line):
                    continue
                for resource_spans in json.loads(line).get("resourceSpans", []):
                    service = _service_name(resource_spans.get("resource", {}))
                    for scope_spans in resource_spans.get("scopeSpans", []):
                        for span in scope_spans.get("spans", []):
                            if trace_id is None or span.get("traceId") == trace_id:
                                yield {**span, "service": service}


def _service_name(resource: dict[str, Any]) -> str | None:
    for attribute in resource.get("attributes", []):
        if attribute.get("key") == "service.name":
            value: str | None = attribute.get("value", {}).get("stringValue")
            return value
    return None
