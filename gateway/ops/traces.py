"""One trace for the console, from the OTLP/JSON-lines files every process writes, read by
marketplace_platform.trace_files.read_spans: only the lines that name the trace id are parsed,
so a large folder costs a read, not a parse of every span."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from marketplace_platform.trace_files import read_spans

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_STATUS = {"STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error"}


def _attribute_value(value: dict[str, Any]) -> str:
    for kind in ("stringValue", "intValue", "boolValue", "doubleValue"):
        if kind in value:
            return str(value[kind])
    return json.dumps(value, separators=(",", ":"))


def read_trace(directory: Path, trace_id: str) -> list[dict[str, Any]]:
    """The spans of `trace_id` (lowercase hex) under `directory`, sorted by start: times in ms
    from the trace's first span. Blocking file reads: run it on a thread."""
    if not directory.is_dir():
        return []
    found = list(read_spans(directory, trace_id=trace_id))
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
