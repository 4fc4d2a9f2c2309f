"""Per-request context carried in ContextVars: request id and the caller's deadline."""

from __future__ import annotations

import time
import uuid
from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
deadline_var: ContextVar[float | None] = ContextVar("deadline", default=None)

REQUEST_ID_HEADER = "x-request-id"


def new_request_id() -> str:
    """A fresh request id for calls that arrive without one."""
    return uuid.uuid4().hex


def remaining_budget() -> float | None:
    """Seconds left before the current request's deadline, or None outside a request."""
    deadline = deadline_var.get()
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
