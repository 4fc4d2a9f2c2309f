"""One trace for the console, read from the OTLP/JSON-lines files every process writes
(marketplace_platform.trace_files): the files are scanned line by line and only the lines that
name the trace id are parsed, so a large folder costs a read, not a parse of every span."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_STATUS = {"STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error"}


def _service_name(resource: dict[str, Any]) -> str | None:
    for attribute in resource.get("attributes", []):
        if attribute.get("key") == "service.name":
            value = attribute.get("value", {}).get("stringValue")
            return None if value is None else str(value)
    return None


def _attribute_value(value: dict[str, Any]) -> str:
    for kind in ("stringValue", "intValue", "boolValue", "doubleValue"):
        if kind in value:
            return str(value[kind])
    return json.dumps(value, separators=(",", ":"))


def _spans_of(directory: Path, trace_id: str) -> Iterator[dict[str, Any]]:
    for path in sorted(directory.glob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if trace_id not in line:
                    continue
                for resource_spans in json.loads(line).get("resourceSpans", []):
                    service = _service_name(resource_spans.get("resource", {}))
                    for scope_spans in resource_spans.get("scopeSpans", []):
                        for span in scope_spans.get("spans", []):
                            if span.get("traceId") == trace_id:
                                yield {**span, "service": service}


def read_trace(directory: Path, trace_id: str) -> list[dict[str, Any]]:
    """The spans of `trace_id` (lowercase hex) under `directory`, sorted by start: times in ms
    from the trace's first span. Blocking file reads: run it on a thread."""
    if not directory.is_dir():
        return []
    found = list(_spans_of(directory, trace_id))
    if not found:
        return []
    first = min(int(span["startTimeUnixNano"]) for span in found)
    spans = []
    for span in found:
        start = int(span["startTimeUnixNano"])
        end = int(span.get("endTimeUnixNano", start))
        spans.append(
            {
                "span_id": span["spanId"],
                "parent_span_id": span.get("parentSpanId") or None,
                "name": span.get("name", ""),
                "service": span["service"],
                "start_ms": (start - first) / 1e6,
                "duration_ms": max(0, end - start) / 1e6,
                "status": _STATUS.get(span.get("status", {}).get("code", ""), "unset"),
                "attributes": {
                    attribute["key"]: _attribute_value(attribute.get("value", {}))
                    for attribute in span.get("attributes", [])
                },
            }
        )
    return sorted(spans, key=lambda span: (span["start_ms"], span["span_id"]))
