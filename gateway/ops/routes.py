"""The operator console's routes: the page (no token, no data) and /ops/api/*, where every call
needs an admin token (the gateway's own check), has the request's budget as its deadline, and
answers 503 while no OPS_DATABASE_URL is configured. The two redrives are logged as one
`ops action` line each, with the action, its target, the actor (the token's sub), the result
and (stamped by the log filter) the request id."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from gateway.auth import Principal
from gateway.ops import alarms, executions, orders, queues, stock, traces
from gateway.ops.database import open_engine, reading
from gateway.problems import ApiProblem, FieldProblem, Problem, bad_request, overloaded
from gateway.settings import GatewaySettings
from marketplace_platform.event_bus.rules import load_routing
from marketplace_platform.queues import Queues, UnknownQueue
from marketplace_platform.queues.postgres import PostgresQueues
from marketplace_platform.saga.redrive import ExecutionNotFound, NotRedrivable, redrive_execution
from marketplace_platform.settings import TracingSettings

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
PAGE = "console.html"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_BODY_BYTES = 1024  # a redrive's body is {"max_messages": N}
_MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
NOT_CONFIGURED = "operator console not configured"
UNAVAILABLE = "the operator console's database did not answer in time; retry shortly"

Admin = Callable[[Request], Awaitable[Principal]]
Endpoint = Callable[[Request], Awaitable[Response]]


def _json(document: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status_code, media_type="application/json")


def not_found(detail: str) -> ApiProblem:
    """404 as a problem."""
    return ApiProblem(Problem(404, "not-found", "Not found", detail))


def conflict(detail: str) -> ApiProblem:
    """409 as a problem: the resource's state refuses the action."""
    return ApiProblem(Problem(409, "conflict", "Conflict with the current state", detail))


def _limit(request: Request, default: int = DEFAULT_LIMIT) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiProblem(
            bad_request(f"limit must be 1..{MAX_LIMIT}", [FieldProblem("limit", "not in 1..200")])
        )
    return int(raw)


class _Open:
    """What `open` builds, until `close`."""

    def __init__(self, engine: AsyncEngine, queues: Queues) -> None:
        self.engine = engine
        self.queues = queues


class OpsConsole:
    """The console's routes over the platform's database, the queues and the trace files."""

    def __init__(self, settings: GatewaySettings, *, admin: Admin) -> None:
        self._settings = settings
        self._admin = admin
        self._open: _Open | None = None
        self._rules: list[alarms.AlertRule] = []
        self._definition: dict[str, Any] = {}
        self._traces = TracingSettings(service_name=settings.service_name).otel_traces_jsonl_dir

    async def open(self) -> None:
        """Build the engine and the queues (the lifespan's start); nothing without a URL."""
        settings = self._settings
        if settings.ops_database_url is None:
            return
        self._rules = alarms.load_rules(settings.ops_alert_rules_file)
        self._definition = json.loads(settings.ops_saga_definition.read_text(encoding="utf-8"))
        engine = open_engine(
            settings.ops_database_url,
            pool_size=settings.ops_db_pool_size,
            statement_timeout_ms=settings.ops_statement_timeout_ms,
            timeout_seconds=settings.gateway_request_budget_seconds,
        )
        routing = load_routing(settings.relay_rules_file).prefixed(settings.relay_queue_prefix)
        self._open = _Open(engine, PostgresQueues(engine, routing.queues))

    async def close(self) -> None:
        """Dispose of the engine (the lifespan's end)."""
        if self._open is not None:
            await self._open.engine.dispose()
            self._open = None

    def routes(self) -> list[Route]:
        """The page, its static files and the API."""
        api = self._api
        return [
            Route("/ops", self.page, methods=["GET"]),
            Route("/ops/static/{file}", self.static, methods=["GET"]),
            Route("/ops/api/orders", api(self.orders), methods=["GET"]),
            Route("/ops/api/orders/{order_id}", api(self.order), methods=["GET"]),
            Route("/ops/api/executions/{name}", api(self.execution), methods=["GET"]),
            Route(
                "/ops/api/executions/{name}/redrive",
                api(self.redrive_execution),
                methods=["POST"],
            ),
            Route("/ops/api/queues", api(self.queues), methods=["GET"]),
            Route("/ops/api/queues/{queue}/dead-letters", api(self.dead_letters), methods=["GET"]),
            Route("/ops/api/queues/{queue}/redrive", api(self.redrive_queue), methods=["POST"]),
            Route("/ops/api/stock", api(self.stock), methods=["GET"]),
            Route("/ops/api/alarms", api(self.alarms), methods=["GET"]),
            Route("/ops/api/traces/{trace_id}", api(self.trace), methods=["GET"]),
        ]

    # -- the page -------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        """The console's page shell."""
        return await self._static_file(PAGE)

    async def static(self, request: Request) -> Response:
        """One of the page's files (only those in gateway/ops/static, by plain name)."""
        return await self._static_file(request.path_params["file"])

    async def _static_file(self, name: str) -> Response:
        files = await asyncio.to_thread(
            lambda: {path.name for path in STATIC.glob("*") if path.is_file()}
        )
        if name not in files:
            raise not_found(f"no console file {name}")
        path = STATIC / name
        return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix, "text/plain"))

    # -- what every API call does first ---------------------------------------------------

    def _api(self, handler: Callable[[Request, Principal, _Open], Awaitable[Response]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            principal = await self._admin(request)
            if self._open is None:
                raise ApiProblem(overloaded(NOT_CONFIGURED, retry_after_seconds=60))
            try:
                async with asyncio.timeout(self._settings.gateway_request_budget_seconds):
                    return await handler(request, principal, self._open)
            except (TimeoutError, DBAPIError) as error:
                # A statement cut by its timeout, the budget spent, or the database away: the
                # console is degraded, not the request wrong.
                log.warning("operator console query failed: %r", error)
                raise ApiProblem(overloaded(UNAVAILABLE)) from None

        return endpoint

    # -- orders and executions ------------------------------------------------------------

    async def orders(self, request: Request, principal: Principal, open_: _Open) -> Response:
        """Search orders."""
        found = await orders.list_orders(
            open_.engine, q=request.query_params.get("q", ""), limit=_limit(request)
        )
        return _json({"orders": found})

    async def order(self, request: Request, principal: Principal, open_: _Open) -> Response:
        """One order with its execution, trace id and timeline."""
        order_id = orders.parse_uuid(request.path_params["order_id"])
        if order_id is None:
            raise ApiProblem(
                bad_request("order_id must be a UUID", [FieldProblem("order_id", "not a UUID")])
            )
        detail = await orders.order_detail(open_.engine, order_id)
        if detail is None:
            raise not_found(f"no order {order_id}")
        return _json(detail)

    async def execution(self, request: Request, principal: Principal, open_: _Open) -> Response:
        """One saga execution: its definition as a graph, its path, whether it is redrivable."""
        name = request.path_params["name"]
        async with reading(open_.engine) as connection:
            detail = await executions.execution_detail(
                connection, name, fallback_definition=self._definition
            )
        if detail is None:
            raise not_found(f"no execution {name}")
        return _json(detail)

    async def redrive_execution(
        self, request: Request, principal: Principal, open_: _Open
    ) -> Response:
        """Redrive a parked execution from the state that failed (409 if it is not parked)."""
        name = request.path_params["name"]
        try:
            redriven = await redrive_execution(open_.engine, name, actor=principal.customer_id)
        except ExecutionNotFound:
            _log_action("redrive-execution", name, principal, "not found")
            raise not_found(f"no execution {name}") from None
        except NotRedrivable as refusal:
            _log_action("redrive-execution", name, principal, "refused")
            raise conflict(str(refusal)) from None
        _log_action("redrive-execution", name, principal, f"redriven at {redriven.state}")
        return _json({"name": redriven.name, "status": redriven.status, "state": redriven.state})

    # -- queues ---------------------------------------------------------------------------

    async def queues(self, request: Request, principal: Principal, open_: _Open) -> Response:
        """Every queue and DLQ with its depth."""
        return _json({"queues": await queues.queue_list(open_.queues)})

    async def dead_letters(self, request: Request, principal: Principal, open_: _Open) -> Response:
        """A queue's dead letters, peeked."""
        queue = request.path_params["queue"]
        try:
            document = await queues.dead_letters(
                open_.queues, queue, limit=_limit(request, default=20)
            )
        except UnknownQueue:
            raise not_found(f"no queue {queue}") from None
        return _json(document)

    async def redrive_queue(self, request: Request, principal: Principal, open_: _Open) -> Response:
        """Move a queue's dead letters back to it."""
        queue = request.path_params["queue"]
        max_messages = _max_messages(await _bounded_body(request, MAX_BODY_BYTES))
        try:
            document = await queues.redrive(open_.queues, queue, max_messages=max_messages)
        except UnknownQueue:
            _log_action("redrive-queue", queue, principal, "not found")
            raise not_found(f"no queue {queue}") from None
        _log_action("redrive-queue", queue, principal, f"redrove {document['redriven']}")
        return _json(document)

    # -- stock, alarms, traces ------------------------------------------------------------

    async def stock(self, request: Request, principal: Principal, open_: _Open) -> Response:
        """SKUs by prefix with their reservations."""
        items = await stock.stock_items(
            open_.engine, sku_prefix=request.query_params.get("sku", ""), limit=_limit(request)
        )
        return _json({"items": items})

    async def alarms(self, request: Request, principal: Principal, open_: _Open) -> Response:
        """Every alert rule evaluated now."""
        settings = self._settings
        evaluated = await alarms.evaluate(
            self._rules,
            engine=open_.engine,
            queues=open_.queues,
            stuck_after_seconds=settings.relay_stuck_after_seconds,
            payment_metrics_url=settings.ops_payment_metrics_url,
            payment_metrics_timeout_seconds=settings.ops_payment_metrics_timeout_seconds,
        )
        return _json({"alarms": evaluated})

    async def trace(self, request: Request, principal: Principal, open_: _Open) -> Response:
        """The spans of one trace from the trace files."""
        trace_id = request.path_params["trace_id"].lower()
        if not traces.TRACE_ID.match(trace_id):
            raise ApiProblem(
                bad_request("a trace id is 32 hex digits", [FieldProblem("trace_id", "not hex")])
            )
        spans = await asyncio.to_thread(traces.read_trace, self._traces, trace_id)
        if not spans:
            raise not_found(f"no span of trace {trace_id}")
        return _json({"trace_id": trace_id, "spans": spans})


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The request's body, refused (400) once it passes `limit` bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiProblem(bad_request(f"the body is limited to {limit} bytes"))
    return body


def _max_messages(body: bytes) -> int | None:
    """The redrive body's `max_messages` (absent, null or no body: every dead letter)."""
    if not body.strip():
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiProblem(bad_request("the body must be JSON")) from None
    value = document.get("max_messages") if isinstance(document, dict) else None
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApiProblem(
            bad_request(
                "max_messages must be a positive integer or null",
                [FieldProblem("max_messages", "not a positive integer")],
            )
        )
    return value


def _log_action(action: str, target: str, principal: Principal, result: str) -> None:
    log.info(
        "ops action",
        extra={
            "action": action,
            "target": target,
            "actor": principal.customer_id,
            "result": result,
        },
    )
