"""ASGI middleware at the edge: request id and budget, access log, last-resort 500, shedding."""

from __future__ import annotations

import logging
import re
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.problems import internal_error, overloaded, problem_response
from marketplace_platform.request_context import (
    deadline_var,
    new_request_id,
    request_id_var,
)

log = logging.getLogger("gateway.requests")

REQUEST_ID_HEADER = "X-Request-Id"
# A request slower than this is logged at WARNING whatever its answer.
SLOW_REQUEST_SECONDS = 1.0
# A client's own request id is kept if it is a sane token, else replaced by ours.
_ACCEPTABLE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Liveness must answer even when the gateway sheds everything else.
_NEVER_SHED = frozenset({"/healthz"})


class RequestContext:
    """Give each request an id and a deadline, echo the id, log one line, never leak a trace.

    The line is at DEBUG for an answer below 400 given within `slow_seconds`: on the hot path
    a line per request costs more CPU than the routing itself. Refusals (4xx) stay at INFO;
    server errors, requests that ended without an answer and slow ones at WARNING.
    """

    def __init__(
        self, app: ASGIApp, *, budget_seconds: float, slow_seconds: float = SLOW_REQUEST_SECONDS
    ) -> None:
        self.app = app
        self.budget_seconds = budget_seconds
        self.slow_seconds = slow_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request inside its context."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.monotonic()
        id_token = request_id_var.set(request_id)
        deadline_token = deadline_var.set(started + self.budget_seconds)
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            if status is not None:  # too late for a problem: the response has begun
                raise
            await problem_response(internal_error(request_id))(scope, receive, send_with_id)
        finally:
            seconds = time.monotonic() - started
            level = access_log_level(status, seconds, slow_seconds=self.slow_seconds)
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={"status": status, "duration_ms": round(seconds * 1000, 1)},
                )
            request_id_var.reset(id_token)
            deadline_var.reset(deadline_token)


class LoadShedding:
    """Answer 503 + Retry-After at once when `limit` requests are already being handled.

    Waiting in a queue without bound would only make every request late; a client told to
    come back shortly can go to another gateway or try again.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or shed it."""
        if scope["type"] != "http" or scope["path"] in _NEVER_SHED:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            problem = overloaded(f"the gateway is at its limit of {self.limit} requests at once")
            await problem_response(problem)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def access_log_level(status: int | None, seconds: float, *, slow_seconds: float) -> int:
    """The level of a request's access line: DEBUG for a quick success, louder otherwise."""
    if status is None or status >= 500 or seconds >= slow_seconds:
        return logging.WARNING
    if status >= 400:
        return logging.INFO
    return logging.DEBUG


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _ACCEPTABLE_REQUEST_ID.match(candidate):
                return candidate
            break
    return new_request_id()
