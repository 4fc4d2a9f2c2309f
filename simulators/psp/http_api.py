"""The HTTP/JSON endpoints: translate requests to operations and answers to responses."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.psp import intents
from simulators.psp.errors import InvalidRequest, PspError
from simulators.psp.faults import FaultConfig, FaultInjector
from simulators.psp.idempotency import check_key, fingerprint, run_once
from simulators.psp.ledger import Ledger
from simulators.psp.middleware import FaultInjection, RequestLog

log = logging.getLogger(__name__)

Operation = Callable[[Mapping[str, Any], int], dict[str, Any]]


class PspApi:
    """The endpoints, over one ledger and one fault injector."""

    def __init__(self, ledger: Ledger, faults: FaultInjector, clock: Callable[[], float]) -> None:
        self._ledger = ledger
        self._faults = faults
        self._clock = clock

    async def healthz(self, request: Request) -> Response:
        """Liveness."""
        return JSONResponse({"status": "ok"})

    async def get_faults(self, request: Request) -> Response:
        """The faults in force."""
        return JSONResponse(self._faults.config.model_dump())

    async def put_faults(self, request: Request) -> Response:
        """Replace the faults in force; fields left out go back to their defaults."""
        try:
            config = FaultConfig.model_validate(_json_object(await request.body()))
        except ValidationError as error:
            raise InvalidRequest(f"invalid fault configuration: {error}") from error
        self._faults.replace(config)
        log.info("faults now %s", config.model_dump(), extra={"faults": config.model_dump()})
        return JSONResponse(config.model_dump())

    async def create_intent(self, request: Request) -> Response:
        """POST /v1/payment_intents: authorize."""
        return await self._apply(
            request, lambda params, now: intents.authorize(self._ledger, params, now=now)
        )

    async def capture_intent(self, request: Request) -> Response:
        """POST /v1/payment_intents/{id}/capture."""
        intent_id = request.path_params["intent_id"]
        return await self._apply(
            request, lambda params, _: intents.capture(self._ledger, intent_id, params)
        )

    async def cancel_intent(self, request: Request) -> Response:
        """POST /v1/payment_intents/{id}/cancel: void."""
        intent_id = request.path_params["intent_id"]
        return await self._apply(
            request, lambda params, _: intents.cancel(self._ledger, intent_id, params)
        )

    async def create_refund(self, request: Request) -> Response:
        """POST /v1/refunds."""
        return await self._apply(
            request, lambda params, now: intents.refund(self._ledger, params, now=now)
        )

    async def retrieve_intent(self, request: Request) -> Response:
        """GET /v1/payment_intents/{id}."""
        return JSONResponse(intents.retrieve(self._ledger, request.path_params["intent_id"]))

    async def list_intents(self, request: Request) -> Response:
        """GET /v1/payment_intents: the ground truth, in creation order."""
        return JSONResponse(intents.list_page(self._ledger, request.query_params))

    async def _apply(self, request: Request, operation: Operation) -> Response:
        params = _json_object(await request.body())
        key = check_key(request.headers.get("idempotency-key"))
        now = int(self._clock())
        reply = run_once(
            self._ledger,
            lambda: operation(params, now),
            key=key,
            request_fingerprint=fingerprint(request.method, request.url.path, params),
            now=now,
        )
        headers = {"Idempotent-Replayed": "true"} if reply.replayed else {}
        if key:
            headers["Idempotency-Key"] = key
        return Response(
            reply.body, status_code=reply.status, media_type="application/json", headers=headers
        )


def build_app(
    *, ledger: Ledger, faults: FaultInjector, clock: Callable[[], float] = time.time
) -> Starlette:
    """The ASGI application."""
    api = PspApi(ledger, faults, clock)
    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/admin/faults", api.get_faults, methods=["GET"]),
        Route("/admin/faults", api.put_faults, methods=["PUT"]),
        Route("/v1/payment_intents", api.create_intent, methods=["POST"]),
        Route("/v1/payment_intents", api.list_intents, methods=["GET"]),
        Route("/v1/payment_intents/{intent_id}", api.retrieve_intent, methods=["GET"]),
        Route("/v1/payment_intents/{intent_id}/capture", api.capture_intent, methods=["POST"]),
        Route("/v1/payment_intents/{intent_id}/cancel", api.cancel_intent, methods=["POST"]),
        Route("/v1/refunds", api.create_refund, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestLog), Middleware(FaultInjection, faults=faults)],
        exception_handlers={PspError: _psp_error, HTTPException: _http_error},
    )


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        params = json.loads(raw)
    except ValueError as error:
        raise InvalidRequest(f"the body is not valid JSON: {error}") from error
    if not isinstance(params, dict):
        raise InvalidRequest("the body must be a JSON object")
    return params


async def _psp_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, PspError)
    return JSONResponse(error.body(), status_code=error.status)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = "resource_missing" if error.status_code == 404 else None
    body = {"error": {"type": "invalid_request_error", "code": code, "message": error.detail}}
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)
