"""Count and time every gateway request by route template (not raw path: ids would explode the
series) and status; a request no route matched counts under route "unmatched"."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketplace_platform.metrics import HTTP_LATENCY, HTTP_REQUESTS


class HttpMetrics:
    """ASGI middleware feeding checkout_http_requests_total and its latency histogram."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(name, str(status)).inc()
            HTTP_LATENCY.labels(name).observe(time.perf_counter() - started)
