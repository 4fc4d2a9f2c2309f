"""Pricing a cart for checkout against the catalog as it is now. Pure rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from marketplace_platform.money import Money
from services.cart.domain.cart import Cart, CartLine, subtotal
from services.cart.domain.catalog import Product


class ProblemKind(StrEnum):
    """Why a line (or the whole cart) blocks checkout."""

    UNKNOWN_PRODUCT = "UNKNOWN_PRODUCT"
    DELISTED = "DELISTED"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    EMPTY_CART = "EMPTY_CART"


@dataclass(frozen=True)
class PricingProblem:
    """One thing that blocks checkout; `sku` is None for whole-cart problems."""

    kind: ProblemKind
    sku: str | None
    detail: str


@dataclass(frozen=True, kw_only=True)
class PricedCart:
    """The cart's buyable lines at current prices, their subtotal, and what blocks checkout."""

    cart: Cart
    lines: tuple[CartLine, ...]
    subtotal: Money
    problems: tuple[PricingProblem, ...]
    priced_at: datetime


def price(
    cart: Cart, catalog: Mapping[str, Product], *, default_currency: str, now: datetime
) -> PricedCart:
    """Reprice every line from the catalog; lines that cannot be bought become problems.

    The cart's currency is that of its first buyable line, so a product whose currency changed
    after it was added is flagged rather than silently summed.
    """
    lines: list[CartLine] = []
    problems: list[PricingProblem] = []
    for line in cart.lines:
        product = catalog.get(line.sku)
        if product is None:
            problems.append(
                PricingProblem(ProblemKind.UNKNOWN_PRODUCT, line.sku, f"{line.sku} is gone")
            )
        elif not product.listed:
            problems.append(
                PricingProblem(ProblemKind.DELISTED, line.sku, f"{line.sku} is not for sale")
            )
        elif lines and product.price.currency != lines[0].unit_price.currency:
            problems.append(
                PricingProblem(
                    ProblemKind.CURRENCY_MISMATCH,
                    line.sku,
                    f"{line.sku} is priced in {product.price.currency}, "
                    f"the cart in {lines[0].unit_price.currency}",
                )
            )
        else:
            lines.append(
                replace(
                    line,
                    merchant_id=product.merchant_id,
                    name=product.name,
                    unit_price=product.price,
                )
            )
    if not cart.lines:
        problems.append(PricingProblem(ProblemKind.EMPTY_CART, None, "the cart has no lines"))
    return PricedCart(
        cart=cart,
        lines=tuple(lines),
        subtotal=subtotal(tuple(lines), default_currency),
        problems=tuple(problems),
        priced_at=now,
    )
