"""The public HTTP API: each route authenticates, throttles, translates to one gRPC call and
translates the answer back. No business rules live here."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import grpc
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import views
from gateway.auth import (
    ADMIN_SCOPE,
    Authenticator,
    Forbidden,
    KeysUnavailable,
    Principal,
    Unauthenticated,
)
from gateway.bodies import (
    Body,
    CheckoutBody,
    EmptyBody,
    ProductBody,
    QuantityBody,
    StockBody,
    parse_body,
)
from gateway.prefer import PREFER, PREFERENCE_APPLIED, WaitPreference, wait_preference
from gateway.problems import (
    ApiProblem,
    FieldProblem,
    Problem,
    bad_request,
    forbidden,
    from_grpc,
    overloaded,
    problem_response,
    too_many_requests,
    unauthenticated,
)
from gateway.throttle import Throttle
from gateway.upstream import Upstreams
from marketplace.cart.v1 import cart_service_pb2 as cart_pb
from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.common.v1 import address_pb2, ids_pb2, money_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as inventory_pb
from marketplace_platform.request_context import deadline_var

IDEMPOTENCY_KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"

B = TypeVar("B", bound=Body)
Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(
    document: object, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """An application/json response serialized by orjson."""
    return Response(
        orjson.dumps(document),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


class GatewayApi:
    """The routes, bound to the upstream stubs, the throttle and the token checks."""

    def __init__(
        self,
        *,
        upstreams: Callable[[], Upstreams],
        throttle: Callable[[], Throttle],
        authenticator: Authenticator,
        max_body_bytes: int,
        openapi_document: bytes,
        request_budget_seconds: float,
    ) -> None:
        self._upstreams = upstreams
        self._throttle = throttle
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes
        self.openapi_document = openapi_document
        self.request_budget_seconds = request_budget_seconds

    def routes(self) -> list[Route]:
        """Every route of the public API."""
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/v1/admin/products/{sku}", self.put_product, methods=["PUT"]),
            _route("/v1/admin/inventory/{sku}", GET=self.get_stock, PUT=self.put_stock),
            Route("/v1/carts", self.create_cart, methods=["POST"]),
            Route("/v1/carts/{cart_id}", self.get_cart, methods=["GET"]),
            _route("/v1/carts/{cart_id}/items/{sku}", PUT=self.set_item, DELETE=self.remove_item),
            Route("/v1/checkouts", self.place_order, methods=["POST"]),
            Route("/v1/orders/{order_id}", self.get_order, methods=["GET"]),
            Route("/v1/orders/{order_id}/cancel", self.cancel_order, methods=["POST"]),
        ]

    # -- operations -------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: every upstream service answers its health check with SERVING."""
        down = await self._upstreams().not_serving()
        if down:
            return problem_response(overloaded(f"not serving yet: {', '.join(sorted(down))}"))
        return json_response({"status": "ready"})

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI 3.1 document kept in the repository, byte for byte."""
        return Response(self.openapi_document, media_type="application/json")

    async def put_product(self, request: Request) -> Response:
        """Admin: create or replace a catalog product."""
        await self._admin(request)
        body = await self._body(request, ProductBody)
        upsert = cart_pb.UpsertProductRequest(
            idempotency_key=_key_or_fresh(request),
            sku=ids_pb2.Sku(value=request.path_params["sku"]),
            name=body.name,
            price=money_pb2.Money(
                amount_minor=body.price.amount_minor, currency=body.price.currency
            ),
        )
        if "merchant_id" in body.model_fields_set:
            upsert.merchant_id.value = body.merchant_id
        if "listed" in body.model_fields_set:
            upsert.listed = body.listed
        response = await self._upstreams().cart.UpsertProduct(upsert)
        return json_response(views.product(response.product))

    async def put_stock(self, request: Request) -> Response:
        """Admin: set a SKU's units on hand."""
        await self._admin(request)
        body = await self._body(request, StockBody)
        response = await self._upstreams().inventory.SetStock(
            inventory_pb.SetStockRequest(
                idempotency_key=_key_or_fresh(request),
                sku=ids_pb2.Sku(value=request.path_params["sku"]),
                on_hand=body.on_hand,
            )
        )
        return json_response(views.stock_level(response.stock_level))

    async def get_stock(self, request: Request) -> Response:
        """Admin: a SKU's stock level."""
        await self._admin(request)
        response = await self._upstreams().inventory.GetStock(
            inventory_pb.GetStockRequest(sku=ids_pb2.Sku(value=request.path_params["sku"]))
        )
        return json_response(views.stock_level(response.stock_level))

    async def create_cart(self, request: Request) -> Response:
        """A new empty cart for the caller."""
        principal = await self._customer(request)
        await self._body(request, EmptyBody)
        response = await self._upstreams().cart.CreateCart(
            cart_pb.CreateCartRequest(
                idempotency_key=_key_or_fresh(request),
                customer_id=_customer_id(principal),
            )
        )
        cart = views.cart(response.cart)
        return json_response(cart, 201, {"Location": f"/v1/carts/{cart['cart_id']}"})

    async def get_cart(self, request: Request) -> Response:
        """One of the caller's carts."""
        principal = await self._customer(request)
        response = await self._upstreams().cart.GetCart(
            cart_pb.GetCartRequest(
                cart_id=ids_pb2.CartId(value=request.path_params["cart_id"]),
                customer_id=_customer_id(principal),
            )
        )
        return json_response(views.cart(response.cart))

    async def set_item(self, request: Request) -> Response:
        """Put a SKU in the caller's cart with a quantity."""
        principal = await self._customer(request)
        body = await self._body(request, QuantityBody)
        response = await self._upstreams().cart.SetItemQuantity(
            cart_pb.SetItemQuantityRequest(
                idempotency_key=_key_or_fresh(request),
                cart_id=ids_pb2.CartId(value=request.path_params["cart_id"]),
                customer_id=_customer_id(principal),
                sku=ids_pb2.Sku(value=request.path_params["sku"]),
                quantity=body.quantity,
                expected_version=_expected_version(request),
            )
        )
        return json_response(views.cart(response.cart))

    async def remove_item(self, request: Request) -> Response:
        """Take a SKU out of the caller's cart."""
        principal = await self._customer(request)
        response = await self._upstreams().cart.RemoveItem(
            cart_pb.RemoveItemRequest(
                idempotency_key=_key_or_fresh(request),
                cart_id=ids_pb2.CartId(value=request.path_params["cart_id"]),
                customer_id=_customer_id(principal),
                sku=ids_pb2.Sku(value=request.path_params["sku"]),
                expected_version=_expected_version(request),
            )
        )
        return json_response(views.cart(response.cart))

    async def place_order(self, request: Request) -> Response:
        """Check the caller's cart out: 202 with the PENDING order; replays answer the same.

        With `Prefer: wait=N` the answer waits up to N s for the order to leave PENDING: 200
        with the order once it has, else 202 with the order as it stands.
        """
        principal = await self._customer(request)
        key = _required_key(request)
        wait = _wait(request)
        body = await self._body(request, CheckoutBody)
        address = body.shipping_address
        response = await self._upstreams().checkout.PlaceOrder(
            checkout_pb.PlaceOrderRequest(
                idempotency_key=key,
                customer_id=_customer_id(principal),
                cart_id=ids_pb2.CartId(value=body.cart_id),
                payment_method=body.payment_method,
                shipping_address=address_pb2.Address(
                    name=address.name,
                    line1=address.line1,
                    line2=address.line2,
                    city=address.city,
                    region=address.region,
                    postal_code=address.postal_code,
                    country=address.country,
                ),
            )
        )
        order_id = response.order_id.value
        headers = {"Location": f"/v1/orders/{order_id}"}
        if response.replayed:
            headers[REPLAYED] = "true"
        document = {"order_id": order_id, "status": views.order_status(response.status)}
        if wait is None:
            return json_response(document, 202, headers)
        try:
            order = await self._order(principal, order_id, wait)
        except grpc.aio.AioRpcError:
            # The order is placed; only the wait failed: answer as without the preference.
            return json_response(document, 202, headers)
        headers[PREFERENCE_APPLIED] = wait.applied
        pending = order.status == checkout_pb.ORDER_STATUS_PENDING
        return json_response(views.order(order), 202 if pending else 200, headers)

    async def get_order(self, request: Request) -> Response:
        """One of the caller's orders; with `Prefer: wait=N`, once it has left PENDING or N s
        have passed."""
        principal = await self._customer(request)
        wait = _wait(request)
        order = await self._order(principal, request.path_params["order_id"], wait)
        headers = {PREFERENCE_APPLIED: wait.applied} if wait is not None else None
        return json_response(views.order(order), headers=headers)

    async def _order(
        self, principal: Principal, order_id: str, wait: WaitPreference | None
    ) -> checkout_pb.Order:
        """GetOrder, waiting `wait` for the order to leave PENDING; the request's budget (and
        the call's deadline) grows by the wait, so the wait never eats into the read."""
        read = checkout_pb.GetOrderRequest(
            order_id=ids_pb2.OrderId(value=order_id), customer_id=_customer_id(principal)
        )
        if wait is None:
            return (await self._upstreams().checkout.GetOrder(read)).order
        read.wait.seconds = wait.seconds
        with _budget_extended_by(wait.seconds):
            response = await self._upstreams().checkout.GetOrder(
                read, timeout=wait.seconds + self.request_budget_seconds
            )
        return response.order

    async def cancel_order(self, request: Request) -> Response:
        """Ask to cancel one of the caller's orders: 202 with the order as it now stands."""
        principal = await self._customer(request)
        key = _required_key(request)
        await self._body(request, EmptyBody)
        response = await self._upstreams().checkout.CancelOrder(
            checkout_pb.CancelOrderRequest(
                idempotency_key=key,
                order_id=ids_pb2.OrderId(value=request.path_params["order_id"]),
                customer_id=_customer_id(principal),
            )
        )
        return json_response(views.order(response.order), 202)

    # -- what every route does first ---------------------------------------------------------

    async def _customer(self, request: Request) -> Principal:
        """The authenticated caller, once their token bucket has a token for this request."""
        try:
            principal = await self.authenticator.authenticate(request.headers.get("authorization"))
        except Unauthenticated as error:
            raise ApiProblem(unauthenticated(str(error))) from None
        except KeysUnavailable as error:
            raise ApiProblem(overloaded(f"{error}; retry shortly")) from None
        decision = await self._throttle().take(principal.customer_id)
        if not decision.allowed:
            raise ApiProblem(
                too_many_requests(
                    decision.retry_after_seconds, "too many requests for this customer"
                )
            )
        return principal

    async def _admin(self, request: Request) -> Principal:
        """The caller, who must hold the admin scope."""
        principal = await self._customer(request)
        try:
            principal.require(ADMIN_SCOPE)
        except Forbidden as error:
            raise ApiProblem(forbidden(str(error))) from None
        return principal

    async def _body(self, request: Request, model: type[B]) -> B:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise ApiProblem(_too_large(self.max_body_bytes))
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > self.max_body_bytes:
                raise ApiProblem(_too_large(self.max_body_bytes))
        return parse_body(model, raw)


def _route(path: str, **by_method: Endpoint) -> Route:
    """One route for several methods, so a wrong method's 405 lists every allowed one."""
    if "GET" in by_method:
        by_method["HEAD"] = by_method["GET"]

    async def dispatch(request: Request) -> Response:
        return await by_method[request.method](request)

    return Route(path, dispatch, methods=list(by_method))


def _wait(request: Request) -> WaitPreference | None:
    """The request's usable `Prefer: wait`, if any (anything else in Prefer is ignored)."""
    return wait_preference(request.headers.getlist(PREFER))


@contextlib.contextmanager
def _budget_extended_by(seconds: float) -> Iterator[None]:
    """Inside the block, the request's deadline (every upstream call's cap) is `seconds` later."""
    deadline = deadline_var.get()
    token = deadline_var.set(None if deadline is None else deadline + seconds)
    try:
        yield
    finally:
        deadline_var.reset(token)


def _customer_id(principal: Principal) -> ids_pb2.CustomerId:
    return ids_pb2.CustomerId(value=principal.customer_id)


def _key_or_fresh(request: Request) -> str:
    """The client's Idempotency-Key if it sent one; else a key for this one HTTP request, so the
    channel's own retries of it cannot act twice."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    return f"gw-{uuid.uuid4().hex}" if key is None else key  # an empty one is refused upstream


def _required_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_KEY)
    if not key:
        raise ApiProblem(
            bad_request(
                "this operation needs an Idempotency-Key header",
                [FieldProblem(IDEMPOTENCY_KEY, "required")],
            )
        )
    return key


def _expected_version(request: Request) -> int:
    """The cart version from `If-Match` ("3" or 3); 0 (unconditional) when absent."""
    raw = request.headers.get("if-match")
    if raw is None:
        return 0
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit() or len(value) > 18:
        raise ApiProblem(
            bad_request(
                "If-Match must be a cart version", [FieldProblem("If-Match", "not a version")]
            )
        )
    return int(value)


def _too_large(limit: int) -> Problem:
    return Problem(
        413, "payload-too-large", "Payload too large", f"bodies are limited to {limit} bytes"
    )


async def grpc_error_response(request: Request, error: Exception) -> Response:
    """Exception handler: a failed upstream call as a problem."""
    assert isinstance(error, grpc.aio.AioRpcError)
    return problem_response(from_grpc(error))


async def api_problem_response(request: Request, error: Exception) -> Response:
    """Exception handler: the gateway's own refusals."""
    assert isinstance(error, ApiProblem)
    return problem_response(error.problem)


async def http_error_response(request: Request, error: Exception) -> Response:
    """Exception handler: Starlette's own 404 (no route) and 405 (wrong method) as problems."""
    assert isinstance(error, HTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
    problem = Problem(
        error.status_code, slug, error.detail, error.detail, headers=dict(error.headers or {})
    )
    return problem_response(problem)
