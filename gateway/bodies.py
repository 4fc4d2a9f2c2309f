"""Request bodies: JSON shapes checked strictly (types, required fields), then made into protos.

The value rules (ranges, patterns, lengths) are the contracts' own and are enforced by the
services' boundary, whose field violations come back as 400s; here only what cannot even be put
into a proto (wrong types, missing fields, integers beyond int64) is refused.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.problems import ApiProblem, FieldProblem, bad_request

Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class Body(BaseModel):
    """A request body: strict JSON types, unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class MoneyBody(Body):
    """`{"amount_minor": int, "currency": "USD"}`."""

    amount_minor: Int64
    currency: str


class ProductBody(Body):
    """PUT /v1/admin/products/{sku}."""

    name: str
    price: MoneyBody
    # absent means the service's default (merchant "default", listed); null is not a value
    merchant_id: str = ""
    listed: bool = True


class StockBody(Body):
    """PUT /v1/admin/inventory/{sku}."""

    on_hand: Int64


class QuantityBody(Body):
    """PUT /v1/carts/{cart_id}/items/{sku}."""

    quantity: Int32


class AddressBody(Body):
    """A shipping address."""

    name: str
    line1: str
    line2: str = ""
    city: str
    region: str = ""
    postal_code: str
    country: str


class CheckoutBody(Body):
    """POST /v1/checkouts."""

    cart_id: str
    payment_method: str
    shipping_address: AddressBody


class EmptyBody(Body):
    """`{}` (POST /v1/carts, cancel); an empty body is taken as `{}`."""


B = TypeVar("B", bound=Body)


def parse_body(model: type[B], raw: bytes) -> B:
    """The body as `model`, or a 400 problem naming each wrong field."""
    if model is EmptyBody and not raw.strip():
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        problems = [
            FieldProblem(".".join(str(part) for part in e["loc"]) or "(body)", e["msg"])
            for e in error.errors(include_url=False)
        ]
        raise ApiProblem(bad_request("the request body is not acceptable", problems)) from None
