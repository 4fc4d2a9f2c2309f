"""Reads and writes of catalog products."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.money import Money
from services.cart.adapters.tables import products
from services.cart.domain.catalog import Product


class CatalogRepository:
    """Products of the cart schema, within the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert(self, product: Product) -> Product:
        """Create the product or replace its name, merchant, price and listed flag."""
        values = {
            "merchant_id": product.merchant_id,
            "name": product.name,
            "price_minor": product.price.amount_minor,
            "currency": product.price.currency,
            "listed": product.listed,
        }
        statement = insert(products).values(sku=product.sku, **values)
        row = (
            await self.session.execute(
                statement.on_conflict_do_update(
                    index_elements=[products.c.sku], set_={**values, "updated_at": func.now()}
                ).returning(*products.c)
            )
        ).one()
        return _to_product(row._mapping)

    async def get(self, sku: str) -> Product | None:
        """One product, or None."""
        row = (
            await self.session.execute(select(products).where(products.c.sku == sku))
        ).one_or_none()
        return _to_product(row._mapping) if row is not None else None

    async def many(self, skus: Collection[str]) -> dict[str, Product]:
        """The products of the SKUs that exist, by SKU."""
        if not skus:
            return {}
        rows = await self.session.execute(select(products).where(products.c.sku.in_(skus)))
        return {row.sku: _to_product(row._mapping) for row in rows}


def _to_product(mapping: Any) -> Product:
    return Product(
        sku=mapping["sku"],
        merchant_id=mapping["merchant_id"],
        name=mapping["name"],
        price=Money(mapping["price_minor"], mapping["currency"]),
        listed=mapping["listed"],
        created_at=mapping["created_at"],
        updated_at=mapping["updated_at"],
    )
