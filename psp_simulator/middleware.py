"""ASGI middleware: one structured log line per request, and fault injection on /v1 POSTs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from psp_simulator.errors import ApiError
from psp_simulator.faults import FaultInjector, FaultPlan, Refusal

# A server that can drop a connection offers `scope["extensions"][DROP_EXTENSION]["abort"]`.
DROP_EXTENSION = "psp.drop_connection"
_NOTE = "psp.request_note"
_DISCONNECT_WAIT_SECONDS = 5.0

log = logging.getLogger("psp_simulator.requests")


@dataclass
class _RequestNote:
    status: int | None = None
    fault: str | None = None
    dropped: bool = False


class RequestLog:
    """Log method, path, status, idempotency key, injected fault and duration of each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on and log how it ended."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        note = scope[_NOTE] = _RequestNote()
        started = time.perf_counter()

        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                note.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            headers = dict(scope["headers"])
            key = headers.get(b"idempotency-key", b"").decode(errors="replace") or None
            log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                "dropped" if note.dropped else note.status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": note.status,
                    "dropped": note.dropped,
                    "idempotency_key": key,
                    "fault": note.fault,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )


class FaultInjection:
    """Apply the configured faults to POSTs under /v1 (GETs and /admin are never faulted)."""

    def __init__(self, app: ASGIApp, *, faults: FaultInjector) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Delay, refuse, or apply and then delay or lose the response, as the dice say."""
        if not _faultable(scope):
            await self.app(scope, receive, send)
            return
        plan = self.faults.plan()
        fault = plan.describe()
        if fault is not None:
            if _NOTE in scope:
                scope[_NOTE].fault = fault
            log.warning(
                "injecting fault %s into %s %s",
                fault,
                scope["method"],
                scope["path"],
                extra={"fault": fault, "path": scope["path"]},
            )
        await _apply(plan, self.app, scope, receive, send)


async def _apply(plan: FaultPlan, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    if plan.latency_seconds:
        await asyncio.sleep(plan.latency_seconds)
    if plan.refusal is Refusal.HANG:
        await asyncio.sleep(plan.hang_seconds)
    if plan.refusal is not None:
        await _send_api_error(send)
        return
    held: list[Message] = []

    async def hold(message: Message) -> None:
        held.append(message)

    await app(scope, receive, hold)  # applied (and its idempotent response stored) here
    if plan.ambiguous:
        await _drop_connection(scope, receive, send)
        return
    if plan.response_delay_seconds:
        await asyncio.sleep(plan.response_delay_seconds)
    for message in held:
        await send(message)


def _faultable(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return scope["type"] == "http" and scope["method"] == "POST" and path.startswith("/v1/")


async def _send_api_error(send: Send) -> None:
    body = json.dumps(ApiError("injected fault: the PSP failed").body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _drop_connection(scope: Scope, receive: Receive, send: Send) -> None:
    """Close the connection without a response, so the caller cannot learn the outcome."""
    if _NOTE in scope:
        scope[_NOTE].dropped = True
    abort = scope.get("extensions", {}).get(DROP_EXTENSION, {}).get("abort")
    if abort is None:  # a server without the extension: the nearest thing, a bodiless 502
        await send({"type": "http.response.start", "status": 502, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    abort()
    # Wait until the server has noticed, so it does not answer for a response never started.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DISCONNECT_WAIT_SECONDS):
            while (await receive())["type"] != "http.disconnect":
                pass
