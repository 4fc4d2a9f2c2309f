"""Cart domain rules without I/O: versions, limits, sellable products, one order per cart,
pricing problems, idempotency fingerprints."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from marketplace_platform.errors import (
    DomainError,
    IdempotencyKeyReused,
    InvalidArgument,
    VersionConflict,
)
from marketplace_platform.money import Money
from services.cart.domain import cart as rules
from services.cart.domain.cart import Cart, CartStatus
from services.cart.domain.catalog import Product
from services.cart.domain.idempotency import KeyedRequest, check_replay
from services.cart.domain.pricing import ProblemKind, price

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def product(sku: str, amount: int = 100, currency: str = "USD", listed: bool = True) -> Product:
    return Product(
        sku=sku, merchant_id="m1", name=sku, price=Money(amount, currency), listed=listed
    )


def empty_cart() -> Cart:
    return Cart(
        cart_id=uuid.uuid4(),
        customer_id="c1",
        version=1,
        status=CartStatus.OPEN,
        lines=(),
        order_id=None,
        created_at=NOW,
        updated_at=NOW,
    )


def test_setting_and_removing_lines_bumps_the_version_and_keeps_order() -> None:
    cart = rules.set_quantity(empty_cart(), product("A", 250), "A", 2, 1)
    cart = rules.set_quantity(cart, product("B"), "B", 1, 2)
    cart = rules.set_quantity(cart, product("A", 250), "A", 3, 3)

    assert [(line.sku, line.quantity) for line in cart.lines] == [("A", 3), ("B", 1)]
    assert cart.version == 4
    assert rules.subtotal(cart.lines, "USD") == Money(850, "USD")
    assert rules.remove_item(cart, "ZZZ", 4) is cart
    assert rules.remove_item(cart, "A", 0).version == 5


def test_a_stale_version_is_refused_and_zero_means_any() -> None:
    cart = rules.set_quantity(empty_cart(), product("A"), "A", 1, 1)

    with pytest.raises(VersionConflict):
        rules.set_quantity(cart, product("A"), "A", 2, 1)
    assert rules.set_quantity(cart, product("A"), "A", 2, 0).version == 3


@pytest.mark.parametrize(
    ("found", "reason"),
    [
        (None, "PRODUCT_NOT_FOUND"),
        (product("A", listed=False), "PRODUCT_DELISTED"),
        (product("A", currency="EUR"), "CURRENCY_MISMATCH"),
    ],
)
def test_products_that_cannot_be_sold_here_are_refused(found: Product | None, reason: str) -> None:
    cart = rules.set_quantity(empty_cart(), product("B"), "B", 1, 0)

    with pytest.raises(DomainError) as refused:
        rules.set_quantity(cart, found, "A", 1, 0)
    assert refused.value.reason == reason


def test_quantities_outside_1_to_1000_name_the_field() -> None:
    with pytest.raises(InvalidArgument) as refused:
        rules.set_quantity(empty_cart(), product("A"), "A", 1001, 0)
    assert [v.field for v in refused.value.violations] == ["quantity"]


def test_the_101st_line_is_refused_but_existing_lines_still_change() -> None:
    cart = empty_cart()
    for number in range(rules.MAX_LINES):
        cart = rules.set_quantity(cart, product(f"S{number}"), f"S{number}", 1, 0)

    with pytest.raises(rules.CartFull):
        rules.set_quantity(cart, product("ONE-MORE"), "ONE-MORE", 1, 0)
    assert rules.set_quantity(cart, product("S0"), "S0", 5, 0).lines[0].quantity == 5


def test_a_cart_is_checked_out_by_one_order_only() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    frozen = rules.mark_checked_out(empty_cart(), first)

    assert rules.mark_checked_out(frozen, first) is frozen
    with pytest.raises(rules.CartCheckedOut) as refused:
        rules.mark_checked_out(frozen, second)
    assert refused.value.metadata["existing_order_id"] == str(first)
    with pytest.raises(rules.CartCheckedOut):
        rules.set_quantity(frozen, product("A"), "A", 1, 0)


def test_pricing_uses_current_prices_and_flags_what_blocks_checkout() -> None:
    cart = empty_cart()
    for sku in ("A", "B", "C", "D"):
        cart = rules.set_quantity(cart, product(sku), sku, 2, 0)
    catalog = {
        "A": product("A", 150),
        "B": product("B", listed=False),
        "D": product("D", currency="EUR"),
    }

    priced = price(cart, catalog, default_currency="USD", now=NOW)

    assert [(line.sku, line.unit_price.amount_minor) for line in priced.lines] == [("A", 150)]
    assert priced.subtotal == Money(300, "USD")
    assert [(p.sku, p.kind) for p in priced.problems] == [
        ("B", ProblemKind.DELISTED),
        ("C", ProblemKind.UNKNOWN_PRODUCT),
        ("D", ProblemKind.CURRENCY_MISMATCH),
    ]
    empty = price(empty_cart(), {}, default_currency="EUR", now=NOW)
    assert [p.kind for p in empty.problems] == [ProblemKind.EMPTY_CART]
    assert empty.subtotal == Money(0, "EUR")


def test_a_key_reused_for_another_request_is_refused() -> None:
    first = KeyedRequest(scope="c1", key="k-123456", operation="RemoveItem", fields={"sku": "A"})
    same = KeyedRequest(scope="c1", key="k-123456", operation="RemoveItem", fields={"sku": "A"})
    other = KeyedRequest(scope="c1", key="k-123456", operation="RemoveItem", fields={"sku": "B"})

    check_replay(same, first.fingerprint)
    with pytest.raises(IdempotencyKeyReused):
        check_replay(other, first.fingerprint)
