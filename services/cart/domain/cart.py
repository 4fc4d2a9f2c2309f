"""Carts and their rules: ownership, optimistic versions, line limits, checkout once.

Pure functions over frozen values; the service layer loads a cart under a row lock, applies one
of these and saves the result, so the version check and the change happen atomically.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from marketplace_platform.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    VersionConflict,
)
from marketplace_platform.money import Money
from services.cart.domain.catalog import Product

MAX_LINES = 100
MIN_QUANTITY = 1
MAX_QUANTITY = 1_000


class CartStatus(StrEnum):
    """Where a cart is in its life."""

    OPEN = "OPEN"
    CHECKED_OUT = "CHECKED_OUT"


@dataclass(frozen=True, kw_only=True)
class CartLine:
    """Units of one SKU, with the product's merchant, name and unit price when it was set."""

    sku: str
    merchant_id: str
    name: str
    quantity: int
    unit_price: Money

    @property
    def line_total(self) -> Money:
        """Unit price times quantity."""
        return self.unit_price.times(self.quantity)


@dataclass(frozen=True, kw_only=True)
class Cart:
    """A customer's cart at one version."""

    cart_id: uuid.UUID
    customer_id: str
    version: int
    status: CartStatus
    lines: tuple[CartLine, ...]
    order_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class CartNotFound(NotFound):
    """No such cart, or it belongs to another customer (the two are not told apart)."""

    reason = "CART_NOT_FOUND"


class ProductNotFound(NotFound):
    """The SKU is not in the catalog."""

    reason = "PRODUCT_NOT_FOUND"


class ProductDelisted(FailedPrecondition):
    """The product exists but is not for sale."""

    reason = "PRODUCT_DELISTED"


class CurrencyMismatch(FailedPrecondition):
    """The product is priced in another currency than the cart's lines."""

    reason = "CURRENCY_MISMATCH"


class CartFull(FailedPrecondition):
    """The cart already holds the most lines a cart may hold."""

    reason = "CART_FULL"


class CartCheckedOut(FailedPrecondition):
    """The cart produced an order and can no longer change (or produce another one)."""

    reason = "CART_CHECKED_OUT"


def owned_by(cart: Cart | None, cart_id: uuid.UUID, customer_id: str) -> Cart:
    """The cart if it exists and is the customer's; CartNotFound otherwise."""
    if cart is None or cart.customer_id != customer_id:
        raise CartNotFound(f"no cart {cart_id}", metadata={"cart_id": str(cart_id)})
    return cart


def check_writable(cart: Cart, expected_version: int) -> None:
    """Refuse a change to a checked-out cart, or one made against a stale version (0: any)."""
    if cart.status is CartStatus.CHECKED_OUT:
        raise CartCheckedOut(
            f"cart {cart.cart_id} was checked out by order {cart.order_id}",
            metadata={"cart_id": str(cart.cart_id), "existing_order_id": str(cart.order_id)},
        )
    if expected_version and expected_version != cart.version:
        raise VersionConflict(
            f"cart {cart.cart_id} is at version {cart.version}, not {expected_version}",
            metadata={"cart_id": str(cart.cart_id), "current_version": str(cart.version)},
        )


def check_quantity(quantity: int) -> None:
    """Quantities are 1..1000 (the contract says so too; this guards other callers)."""
    if not MIN_QUANTITY <= quantity <= MAX_QUANTITY:
        raise InvalidArgument(
            f"quantity must be {MIN_QUANTITY}..{MAX_QUANTITY}",
            (FieldViolation("quantity", f"{quantity} is outside 1..1000", "int32.range"),),
        )


def check_known(product: Product | None, sku: str) -> Product:
    """The product if the catalog has it (listed or not); ProductNotFound otherwise."""
    if product is None:
        raise ProductNotFound(f"no product {sku} in the catalog", metadata={"sku": sku})
    return product


def check_sellable(product: Product | None, sku: str) -> Product:
    """The product if it can be put in a cart: known and listed."""
    product = check_known(product, sku)
    if not product.listed:
        raise ProductDelisted(f"product {sku} is not for sale", metadata={"sku": sku})
    return product


def cart_currency(cart: Cart) -> str | None:
    """The currency of the cart's first line (None when empty): every line must share it."""
    return cart.lines[0].unit_price.currency if cart.lines else None


def set_quantity(
    cart: Cart, product: Product | None, sku: str, quantity: int, expected_version: int
) -> Cart:
    """The cart with the SKU's line added or its quantity set, one version on."""
    check_writable(cart, expected_version)
    check_quantity(quantity)
    sellable = check_sellable(product, sku)
    others = [line for line in cart.lines if line.sku != sku]
    currency = cart_currency(replace(cart, lines=tuple(others)))
    if currency is not None and currency != sellable.price.currency:
        raise CurrencyMismatch(
            f"product {sku} is priced in {sellable.price.currency}, the cart in {currency}",
            metadata={"sku": sku, "cart_currency": currency},
        )
    line = CartLine(
        sku=sku,
        merchant_id=sellable.merchant_id,
        name=sellable.name,
        quantity=quantity,
        unit_price=sellable.price,
    )
    if len(others) == len(cart.lines):
        if len(cart.lines) >= MAX_LINES:
            raise CartFull(
                f"cart {cart.cart_id} already has {MAX_LINES} lines",
                metadata={"cart_id": str(cart.cart_id), "max_lines": str(MAX_LINES)},
            )
        lines = (*cart.lines, line)
    else:  # a line keeps its place when its quantity changes
        lines = tuple(line if existing.sku == sku else existing for existing in cart.lines)
    return replace(cart, lines=lines, version=cart.version + 1)


def remove_item(cart: Cart, sku: str, expected_version: int) -> Cart:
    """The cart without the SKU's line, one version on; unchanged when the SKU is not in it."""
    check_writable(cart, expected_version)
    lines = tuple(line for line in cart.lines if line.sku != sku)
    if len(lines) == len(cart.lines):
        return cart
    return replace(cart, lines=lines, version=cart.version + 1)


def mark_checked_out(cart: Cart, order_id: uuid.UUID) -> Cart:
    """The cart frozen by the order; the same order again is a no-op, another is refused."""
    if cart.status is CartStatus.CHECKED_OUT:
        if cart.order_id == order_id:
            return cart
        raise CartCheckedOut(
            f"cart {cart.cart_id} already produced order {cart.order_id}",
            metadata={"cart_id": str(cart.cart_id), "existing_order_id": str(cart.order_id)},
        )
    return replace(cart, status=CartStatus.CHECKED_OUT, order_id=order_id, version=cart.version + 1)


def subtotal(lines: tuple[CartLine, ...], default_currency: str) -> Money:
    """The sum of the line totals in the first line's currency (zero in the default when empty).

    Lines in another currency are left out; writes never let them in, and pricing flags them.
    """
    currency = lines[0].unit_price.currency if lines else default_currency
    return Money(
        sum(line.line_total.amount_minor for line in lines if line.unit_price.currency == currency),
        currency,
    )
