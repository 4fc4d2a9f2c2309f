"""JSON logs, one object per line, with the service, request id, trace id and span id on every
line (the ids are null outside a sampled span)."""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from marketplace_platform.request_context import request_id_var


class _ContextFilter(logging.Filter):
    """Stamp each record with the service name, request id and current trace and span ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = request_id_var.get()
        span_context = trace.get_current_span().get_span_context()
        valid = span_context.is_valid
        record.trace_id = format(span_context.trace_id, "032x") if valid else None
        record.span_id = format(span_context.span_id, "016x") if valid else None
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record to stdout as JSON; replaces any handlers already installed."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_ContextFilter(service))
    handler.setFormatter(
        JsonFormatter(
            "%(levelname)s %(name)s %(message)s %(service)s %(request_id)s"
            " %(trace_id)s %(span_id)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601, UTC
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The HTTP client logs every request at INFO: a line per PSP call that the payment service
    # already logs with its outcome (and 2% of its CPU under load, measured with py-spy).
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
