"""Reads and writes of catalog products."""

from __future__ import annotations

from collections.abc import Collection, MutableMapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.money import Money
from services.cart.adapters.tables import products
from services.cart.domain.catalog import Product


class CatalogRepository:
    """Products of the cart schema, within the caller's transaction.

    `seen_products` holds the products this transaction has read already (the cart repository
    reads its lines' products with the cart); a product asked for again is answered from it
    without another statement.
    """

    def __init__(
        self, session: AsyncSession, *, seen_products: MutableMapping[str, Product | None]
    ) -> None:
        self.session = session
        self._seen = seen_products

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
        stored = _to_product(row._mapping)
        self._seen[stored.sku] = stored
        return stored

    async def get(self, sku: str) -> Product | None:
        """One product, or None."""
        if sku in self._seen:
            return self._seen[sku]
        row = (
            await self.session.execute(select(products).where(products.c.sku == sku))
        ).one_or_none()
        found = _to_product(row._mapping) if row is not None else None
        self._seen[sku] = found
        return found

    async def many(self, skus: Collection[str]) -> dict[str, Product]:
        """The products of the SKUs that exist, by SKU."""
        unseen = [sku for sku in skus if sku not in self._seen]
        if unseen:
            rows = await self.session.execute(select(products).where(products.c.sku.in_(unseen)))
            found = {row.sku: _to_product(row._mapping) for row in rows}
            self._seen.update({sku: found.get(sku) for sku in unseen})
        return {sku: product for sku in skus if (product := self._seen[sku]) is not None}


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
