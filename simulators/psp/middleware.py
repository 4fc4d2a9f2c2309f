"""ASGI middleware: one structured log line per request, and on /v1 POSTs the idempotency keys
in flight (a second request under a key whose first is still running gets 409, as from a real
PSP) and fault injection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulators.psp.errors import ApiError, KeyInUse, PspError, RateLimited, ServiceUnavailable
from simulators.psp.faults import FaultInjector, FaultPlan, Refusal

# A server that can drop a connection offers `scope["extensions"][DROP_EXTENSION]["abort"]`.
DROP_EXTENSION = "psp.drop_connection"
_NOTE = "psp.request_note"
_DISCONNECT_WAIT_SECONDS = 5.0

log = logging.getLogger("simulators.psp.requests")


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
    """Apply the configured faults to POSTs under /v1 (GETs and /admin are never faulted), and
    refuse a POST whose Idempotency-Key is held by a request still in flight."""

    def __init__(self, app: ASGIApp, *, faults: FaultInjector) -> None:
        self.app = app
        self.faults = faults
        # Keys of requests between their arrival and the storing of their answer. Everything
        # runs on one event loop, so a plain set is enough.
        self.keys_in_flight: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Delay, refuse, or apply and then delay or lose the response, as the dice say."""
        if not _faultable(scope):
            await self.app(scope, receive, send)
            return
        plan = self.faults.plan()
        _note_fault(scope, plan)
        if plan.refusal is not None:  # refused before processing: it never holds its key
            await _refuse(plan, send)
            return
        key = _idempotency_key(scope)
        if key is not None and key in self.keys_in_flight:
            await _send_error(send, KeyInUse())
            return
        if key is not None:
            self.keys_in_flight.add(key)
        try:
            await _process(plan, self.app, scope, receive, send, stored=lambda: self._free(key))
        finally:
            self._free(key)

    def _free(self, key: str | None) -> None:
        """Let the key go once the answer is stored: a retry during a held-back answer replays."""
        if key is not None:
            self.keys_in_flight.discard(key)


def _note_fault(scope: Scope, plan: FaultPlan) -> None:
    fault = plan.describe()
    if fault is None:
        return
    if _NOTE in scope:
        scope[_NOTE].fault = fault
    log.warning(
        "injecting fault %s into %s %s",
        fault,
        scope["method"],
        scope["path"],
        extra={"fault": fault, "path": scope["path"]},
    )


_REFUSALS: dict[Refusal, Callable[[], PspError]] = {
    Refusal.ERROR: lambda: ApiError("injected fault: the PSP failed"),
    Refusal.HANG: lambda: ApiError("injected fault: the PSP failed"),
    Refusal.CONFLICT: KeyInUse,
    Refusal.RATE_LIMIT: RateLimited,
    Refusal.OUTAGE: ServiceUnavailable,
}


async def _refuse(plan: FaultPlan, send: Send) -> None:
    """Answer the plan's refusal (after its latency and hang) without applying anything."""
    assert plan.refusal is not None
    if plan.latency_seconds:
        await asyncio.sleep(plan.latency_seconds)
    if plan.hang_seconds:
        await asyncio.sleep(plan.hang_seconds)
    headers = {}
    if plan.refusal is Refusal.RATE_LIMIT and plan.retry_after_seconds:
        headers["retry-after"] = str(plan.retry_after_seconds)
    await _send_error(send, _REFUSALS[plan.refusal](), headers)


async def _process(
    plan: FaultPlan,
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    stored: Callable[[], None],
) -> None:
    """Apply the request (after its latency), then lose or hold back the answer as planned."""
    if plan.latency_seconds:
        await asyncio.sleep(plan.latency_seconds)
    held: list[Message] = []

    async def hold(message: Message) -> None:
        held.append(message)

    await app(scope, receive, hold)  # applied (and its idempotent response stored) here
    stored()
    if plan.ambiguous:
        await _drop_connection(scope, receive, send)
        return
    if plan.response_delay_seconds:
        await asyncio.sleep(plan.response_delay_seconds)
    for message in held:
        await send(message)


def _idempotency_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"idempotency-key" and value:
            return bytes(value).decode(errors="replace")
    return None


def _faultable(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return scope["type"] == "http" and scope["method"] == "POST" and path.startswith("/v1/")


async def _send_error(send: Send, error: PspError, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *((name.encode(), value.encode()) for name, value in (headers or {}).items()),
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
