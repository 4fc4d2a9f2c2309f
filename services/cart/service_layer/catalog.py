"""Catalog use cases: admins set products, everyone reads them."""

from __future__ import annotations

from dataclasses import dataclass

from services.cart.domain import cart as rules
from services.cart.domain import idempotency
from services.cart.domain.catalog import Product
from services.cart.domain.codec import product_from_json, product_to_json
from services.cart.domain.idempotency import KeyedRequest
from services.cart.service_layer.deps import CartDeps

ADMIN_SCOPE = "admin"  # catalog keys are the admins', not any one customer's


@dataclass(frozen=True, kw_only=True)
class UpsertProduct:
    """Create or replace a product."""

    idempotency_key: str
    product: Product


async def upsert_product(command: UpsertProduct, deps: CartDeps) -> Product:
    """Store the product; a replay of the key returns the first answer."""
    product = command.product
    keyed = KeyedRequest(
        scope=ADMIN_SCOPE,
        key=command.idempotency_key,
        operation="UpsertProduct",
        fields={
            "sku": product.sku,
            "merchant": product.merchant_id,
            "name": product.name,
            "amount": product.price.amount_minor,
            "currency": product.price.currency,
            "listed": product.listed,
        },
    )
    async with deps.unit_of_work() as uow:
        stored = await uow.keys.claim(keyed)
        if stored is not None:
            idempotency.check_replay(keyed, stored.fingerprint)
            return product_from_json(stored.response)
        saved = await uow.catalog.upsert(product)
        await uow.keys.complete(keyed, product_to_json(saved))
    return saved


async def get_product(sku: str, deps: CartDeps) -> Product:
    """One product; NotFound for an unknown SKU."""
    async with deps.unit_of_work() as uow:
        product = await uow.catalog.get(sku)
    return rules.check_known(product, sku)
