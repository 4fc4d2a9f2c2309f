"""Build the ASGI application: routes, middleware, exception mapping, and a lifespan that opens
the gRPC channels and the Redis client at startup (never at import)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from gateway.api import (
    GatewayApi,
    api_problem_response,
    grpc_error_response,
    http_error_response,
)
from gateway.http_metrics import HttpMetrics
from gateway.identity import authenticator_for
from gateway.middleware import LoadShedding, RequestContext
from gateway.ops.routes import OpsConsole
from gateway.problems import ApiProblem
from gateway.settings import GatewaySettings
from gateway.throttle import Throttle
from gateway.upstream import Upstreams, open_upstreams
from marketplace_platform.redis_auth import redis_credentials, url_without_auth

OPENAPI_PATH = Path(__file__).with_name("openapi.json")


class _Resources:
    """What the lifespan opens: filled in at startup, closed at shutdown."""

    upstreams: Upstreams | None = None
    throttle: Throttle | None = None

    def upstreams_or_fail(self) -> Upstreams:
        if self.upstreams is None:
            raise RuntimeError("the gateway's lifespan has not started")
        return self.upstreams

    def throttle_or_fail(self) -> Throttle:
        if self.throttle is None:
            raise RuntimeError("the gateway's lifespan has not started")
        return self.throttle


def build_app(settings: GatewaySettings) -> Starlette:
    """The gateway application for these settings."""
    resources = _Resources()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        credentials = redis_credentials(
            settings.redis_auth_token_secret_arn, ttl_seconds=settings.secrets_ttl_seconds
        )
        client = redis.Redis.from_url(
            settings.redis_url if credentials is None else url_without_auth(settings.redis_url),
            credential_provider=credentials,
            socket_timeout=settings.gateway_redis_timeout_seconds,
            socket_connect_timeout=settings.gateway_redis_timeout_seconds,
        )
        resources.throttle = Throttle(
            client,
            rate_per_second=settings.gateway_rate_per_second,
            burst=settings.gateway_burst,
            timeout_seconds=settings.gateway_redis_timeout_seconds,
        )
        resources.upstreams = open_upstreams(settings)
        await ops.open()
        try:
            yield
        finally:
            await ops.close()
            await resources.upstreams.close()
            await client.aclose()
            resources.upstreams = resources.throttle = None

    api = GatewayApi(
        upstreams=resources.upstreams_or_fail,
        throttle=resources.throttle_or_fail,
        authenticator=authenticator_for(settings),
        max_body_bytes=settings.gateway_max_body_bytes,
        openapi_document=OPENAPI_PATH.read_bytes(),
        request_budget_seconds=settings.gateway_request_budget_seconds,
    )
    ops = OpsConsole(settings, admin=api._admin)
    return Starlette(
        routes=api.routes() + ops.routes(),
        middleware=[
            Middleware(HttpMetrics),
            Middleware(RequestContext, budget_seconds=settings.gateway_request_budget_seconds),
            Middleware(LoadShedding, limit=settings.gateway_max_concurrent_requests),
        ],
        exception_handlers={
            ApiProblem: api_problem_response,
            grpc.aio.AioRpcError: grpc_error_response,
            HTTPException: http_error_response,
        },
        lifespan=lifespan,
    )
