"""Reads and writes of carts and their lines."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.money import Money
from services.cart.adapters.tables import cart_lines, carts
from services.cart.domain.cart import Cart, CartLine, CartStatus


class CartRepository:
    """Carts of the cart schema, within the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

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
        query = select(carts).where(carts.c.cart_id == cart_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).one_or_none()
        if row is None:
            return None
        lines = await self.session.execute(
            select(cart_lines)
            .where(cart_lines.c.cart_id == cart_id)
            .order_by(cart_lines.c.position)
        )
        return _to_cart(row._mapping, tuple(_to_line(line._mapping) for line in lines))

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
                carts.update()
                .where(carts.c.cart_id == after.cart_id)
                .values(
                    version=after.version,
                    status=after.status.value,
                    order_id=after.order_id,
                    updated_at=func.now(),
                )
                .returning(*carts.c)
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


def _to_line(mapping: Any) -> CartLine:
    return CartLine(
        sku=mapping["sku"],
        merchant_id=mapping["merchant_id"],
        name=mapping["name"],
        quantity=mapping["quantity"],
        unit_price=Money(mapping["unit_price_minor"], mapping["currency"]),
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
