"""The edge middleware and request bodies without any upstream: an unexpected exception is a
500 problem with the request id and no trace; strict body shapes."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.bodies import CheckoutBody, EmptyBody, QuantityBody, StockBody, parse_body
from gateway.middleware import RequestContext
from gateway.problems import ApiProblem


async def explode(request: Request) -> Response:
    raise RuntimeError("database password is hunter2")


async def test_an_unexpected_exception_is_a_500_problem_without_a_trace() -> None:
    app = Starlette(
        routes=[Route("/boom", explode)],
        middleware=[Middleware(RequestContext, budget_seconds=1.0)],
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        response = await http.get("/boom", headers={"X-Request-Id": "req-boom"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-boom"
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert response.json()["detail"] == "unexpected error; request id req-boom"


def field_errors(
    model: type[StockBody] | type[QuantityBody] | type[CheckoutBody], raw: bytes
) -> list[str]:
    with pytest.raises(ApiProblem) as caught:
        parse_body(model, raw)
    assert caught.value.problem.status == 400
    return [e.field for e in caught.value.problem.errors]


def test_bodies_are_parsed_strictly() -> None:
    assert parse_body(StockBody, b'{"on_hand": 5, "extra": true}').on_hand == 5
    assert field_errors(StockBody, b'{"on_hand": "5"}') == ["on_hand"]
    assert field_errors(StockBody, b'{"on_hand": true}') == ["on_hand"]
    assert field_errors(QuantityBody, b'{"quantity": 4294967296}') == ["quantity"]


def test_nested_fields_are_named_by_their_path() -> None:
    raw = b'{"cart_id": "c", "payment_method": "pm", "shipping_address": {"name": "A"}}'
    assert set(field_errors(CheckoutBody, raw)) == {
        "shipping_address.line1",
        "shipping_address.city",
        "shipping_address.postal_code",
        "shipping_address.country",
    }


def test_an_empty_body_counts_as_an_empty_object_where_none_is_needed() -> None:
    assert parse_body(EmptyBody, b"") == EmptyBody()
    assert parse_body(EmptyBody, b'{"anything": 1}') == EmptyBody()
    with pytest.raises(ApiProblem):
        parse_body(EmptyBody, b"[]")
