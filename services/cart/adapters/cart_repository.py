"""Reads and writes of carts and their lines."""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping, Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.db import TransactionClock
from marketplace_platform.money import Money
from services.cart.adapters.tables import cart_lines, carts
from services.cart.domain.cart import Cart, CartLine, CartStatus
from services.cart.domain.catalog import Product

# The cart, its lines in the order they were added, each with its product as the catalog has
# it now (NULLs when the SKU left the catalog), and the transaction's now(): everything
# pricing a cart needs, in one round trip.
_CART = """
SELECT c.cart_id, c.customer_id, c.status, c.version, c.order_id, c.created_at, c.updated_at,
       now() AS transaction_now,
       ARRAY(SELECT ROW(l.sku, l.merchant_id, l.name, l.quantity, l.unit_price_minor,
                        l.currency, p.sku IS NOT NULL, p.merchant_id, p.name, p.price_minor,
                        p.currency, p.listed, p.created_at, p.updated_at)
             FROM cart.cart_lines AS l LEFT JOIN cart.products AS p ON p.sku = l.sku
             WHERE l.cart_id = c.cart_id
             ORDER BY l.position) AS lines
FROM cart.carts AS c
WHERE c.cart_id = :cart_id
"""
_SAVE = (
    carts.update()
    .where(carts.c.cart_id == bindparam("cart_key"))
    .values(
        version=bindparam("version"),
        status=bindparam("status"),
        order_id=bindparam("order_id"),
        updated_at=func.now(),
    )
    .returning(*carts.c)
)
_GET = text(_CART)
_GET_FOR_UPDATE = text(_CART + "FOR UPDATE OF c")


class CartRepository:
    """Carts of the cart schema, within the caller's transaction.

    Reading a cart also reads its lines' products and the transaction's clock in the same
    statement; they are handed to `seen_products` (which the catalog repository of the same
    transaction answers from) and to `clock`.
    """

    def __init__(
        self,
        session: AsyncSession,
        *,
        clock: TransactionClock,
        seen_products: MutableMapping[str, Product | None],
    ) -> None:
        self.session = session
        self._clock = clock
        self._seen_products = seen_products

    async def create(self, *, cart_id: uuid.UUID, customer_id: str) -> Cart:
        """Insert an empty OPEN cart at version 1."""
        row = (
            await self.session.execute(
                carts.insert()
                .values(cart_id=cart_id, customer_id=customer_id, status="OPEN", version=1)
                .returning(*carts.c)
            )
        ).one()
        return _to_cart(row._mapping, ())

    async def get(self, cart_id: uuid.UUID, *, for_update: bool = False) -> Cart | None:
        """The cart with its lines in the order they were added (row-locked when for_update)."""
        query = _GET_FOR_UPDATE if for_update else _GET
        row = (await self.session.execute(query, {"cart_id": cart_id})).mappings().one_or_none()
        if row is None:
            return None
        self._clock.note(row["transaction_now"])
        return _to_cart(row, tuple(self._lines(row["lines"])))

    def _lines(self, records: Sequence[Sequence[Any]]) -> list[CartLine]:
        lines = []
        for sku, merchant_id, name, quantity, price, currency, in_catalog, *product in records:
            lines.append(
                CartLine(
                    sku=sku,
                    merchant_id=merchant_id,
                    name=name,
                    quantity=quantity,
                    unit_price=Money(price, currency),
                )
            )
            self._seen_products[sku] = _product(sku, *product) if in_catalog else None
        return lines

    async def save(self, before: Cart, after: Cart) -> Cart:
        """Write the changes from `before` (as loaded under lock) to `after`; return it stored.

        Only changed lines are written; a new line goes after every existing one.
        """
        kept = {line.sku for line in after.lines}
        removed = [line.sku for line in before.lines if line.sku not in kept]
        if removed:
            await self.session.execute(
                cart_lines.delete().where(
                    cart_lines.c.cart_id == after.cart_id, cart_lines.c.sku.in_(removed)
                )
            )
        old = {line.sku: line for line in before.lines}
        for line in after.lines:
            if old.get(line.sku) != line:
                await self._put_line(after.cart_id, line)
        row = (
            await self.session.execute(
                _SAVE,
                {
                    "cart_key": after.cart_id,
                    "version": after.version,
                    "status": after.status.value,
                    "order_id": after.order_id,
                },
            )
        ).one()
        return _to_cart(row._mapping, after.lines)

    async def _put_line(self, cart_id: uuid.UUID, line: CartLine) -> None:
        values = {
            "merchant_id": line.merchant_id,
            "name": line.name,
            "quantity": line.quantity,
            "unit_price_minor": line.unit_price.amount_minor,
            "currency": line.unit_price.currency,
        }
        next_position = (
            select(func.coalesce(func.max(cart_lines.c.position), 0) + 1)
            .where(cart_lines.c.cart_id == cart_id)
            .scalar_subquery()
        )
        await self.session.execute(
            insert(cart_lines)
            .values(cart_id=cart_id, sku=line.sku, position=next_position, **values)
            .on_conflict_do_update(
                index_elements=[cart_lines.c.cart_id, cart_lines.c.sku], set_=values
            )
        )

    async def count_lines(self, cart_id: uuid.UUID) -> int:
        """How many lines the cart holds in the database."""
        query = select(func.count()).where(cart_lines.c.cart_id == cart_id)
        return int((await self.session.execute(query)).scalar_one())


def _product(
    sku: str,
    merchant_id: str,
    name: str,
    price_minor: int,
    currency: str,
    listed: bool,
    created_at: Any,
    updated_at: Any,
) -> Product:
    return Product(
        sku=sku,
        merchant_id=merchant_id,
        name=name,
        price=Money(price_minor, currency),
        listed=listed,
        created_at=created_at,
        updated_at=updated_at,
    )


def _to_cart(mapping: Any, lines: tuple[CartLine, ...]) -> Cart:
    return Cart(
        cart_id=mapping["cart_id"],
        customer_id=mapping["customer_id"],
        version=mapping["version"],
        status=CartStatus(mapping["status"]),
        lines=lines,
        order_id=mapping["order_id"],
        created_at=mapping["created_at"],
        updated_at=mapping["updated_at"],
    )
