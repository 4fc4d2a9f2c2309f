"""The gateway's access line per request: at DEBUG for a quick success (a line per request on
the hot path cost more CPU than the routing), at INFO for a refusal, at WARNING for a server
error or a slow answer, always with its status and duration."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.middleware import RequestContext, access_log_level


async def answer(request: Request) -> Response:
    return Response(status_code=int(request.path_params["status"]))


async def explode(request: Request) -> Response:
    raise RuntimeError("boom")


async def levels_logged(path: str, caplog: pytest.LogCaptureFixture, **options: float) -> list[int]:
    app = Starlette(
        routes=[Route("/status/{status}", answer), Route("/boom", explode)],
        middleware=[Middleware(RequestContext, budget_seconds=1.0, **options)],
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with caplog.at_level(logging.DEBUG, logger="gateway.requests"):
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            await http.get(path)
    lines = [r for r in caplog.records if hasattr(r, "duration_ms")]
    assert all(isinstance(getattr(r, "status", None), int) for r in lines)
    return [r.levelno for r in lines]


@pytest.mark.parametrize(
    ("path", "level"),
    [
        ("/status/202", logging.DEBUG),
        ("/status/304", logging.DEBUG),
        ("/status/404", logging.INFO),
        ("/status/503", logging.WARNING),
    ],
)
async def test_the_access_line_is_as_loud_as_the_answer(
    path: str, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    assert await levels_logged(path, caplog) == [level]


async def test_an_unexpected_exception_is_logged_with_its_500_at_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert await levels_logged("/boom", caplog) == [logging.WARNING]
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


async def test_a_slow_success_is_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert await levels_logged("/status/200", caplog, slow_seconds=0.0) == [logging.WARNING]


def test_a_request_that_ended_without_an_answer_is_a_warning() -> None:
    assert access_log_level(None, 0.01, slow_seconds=1.0) == logging.WARNING
    assert access_log_level(200, 0.01, slow_seconds=1.0) == logging.DEBUG
