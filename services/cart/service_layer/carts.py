"""Cart use cases. Writes lock the cart row, apply a domain rule, save, record the response
under the idempotency key and owe the cache an invalidation, all in one transaction; after the
commit the invalidation is sent to Redis and, once Redis has it, forgotten.

Reads try the cache first and fall back to PostgreSQL, filling the cache on the way out.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from marketplace_platform.ids import new_id
from services.cart.domain import cart as rules
from services.cart.domain import idempotency, pricing
from services.cart.domain.cart import Cart
from services.cart.domain.codec import cart_from_json, cart_to_json
from services.cart.domain.idempotency import KeyedRequest
from services.cart.domain.pricing import PricedCart
from services.cart.service_layer.deps import CartDeps
from services.cart.service_layer.ports import AbstractCartUnitOfWork


@dataclass(frozen=True, kw_only=True)
class CreateCart:
    """A new empty cart for a customer."""

    idempotency_key: str
    customer_id: str


@dataclass(frozen=True, kw_only=True)
class SetItemQuantity:
    """Add a SKU to the cart or set its quantity (expected_version 0: whatever the version)."""

    idempotency_key: str
    cart_id: uuid.UUID
    customer_id: str
    sku: str
    quantity: int
    expected_version: int


@dataclass(frozen=True, kw_only=True)
class RemoveItem:
    """Remove a SKU's line from the cart."""

    idempotency_key: str
    cart_id: uuid.UUID
    customer_id: str
    sku: str
    expected_version: int


@dataclass(frozen=True, kw_only=True)
class MarkCheckedOut:
    """Freeze the cart: an order was placed from it."""

    idempotency_key: str
    cart_id: uuid.UUID
    customer_id: str
    order_id: uuid.UUID


async def create_cart(command: CreateCart, deps: CartDeps) -> Cart:
    """A new OPEN cart at version 1; a replay of the key returns the same cart."""
    keyed = KeyedRequest(
        scope=command.customer_id,
        key=command.idempotency_key,
        operation="CreateCart",
        fields={},
    )
    async with deps.unit_of_work() as uow:
        stored = await uow.keys.claim(keyed)
        if stored is not None:
            idempotency.check_replay(keyed, stored.fingerprint)
            return cart_from_json(stored.response)
        created = await uow.carts.create(cart_id=new_id(), customer_id=command.customer_id)
        await uow.keys.complete(keyed, cart_to_json(created))
    return created


async def get_cart(cart_id: uuid.UUID, customer_id: str, deps: CartDeps) -> Cart:
    """The customer's cart: from the cache when it is trusted and holds it, else PostgreSQL."""
    cached = await deps.cache.read(cart_id)
    if cached is not None:
        return rules.owned_by(cached, cart_id, customer_id)
    async with deps.unit_of_work() as uow:
        found = await uow.carts.get(cart_id)
    cart = rules.owned_by(found, cart_id, customer_id)
    await deps.cache.fill(cart)
    return cart


async def set_item_quantity(command: SetItemQuantity, deps: CartDeps) -> Cart:
    """Add the SKU or set its quantity, if the product can be sold and the version matches."""
    keyed = KeyedRequest(
        scope=command.customer_id,
        key=command.idempotency_key,
        operation="SetItemQuantity",
        fields={
            "cart": str(command.cart_id),
            "sku": command.sku,
            "quantity": command.quantity,
            "expected_version": command.expected_version,
        },
    )

    async def change(cart: Cart, uow: AbstractCartUnitOfWork) -> Cart:
        product = await uow.catalog.get(command.sku)
        return rules.set_quantity(
            cart, product, command.sku, command.quantity, command.expected_version
        )

    return await _write(keyed, command.cart_id, change, deps)


async def remove_item(command: RemoveItem, deps: CartDeps) -> Cart:
    """Remove the SKU's line (a no-op when it is not there), if the version matches."""
    keyed = KeyedRequest(
        scope=command.customer_id,
        key=command.idempotency_key,
        operation="RemoveItem",
        fields={
            "cart": str(command.cart_id),
            "sku": command.sku,
            "expected_version": command.expected_version,
        },
    )

    async def change(cart: Cart, uow: AbstractCartUnitOfWork) -> Cart:
        return rules.remove_item(cart, command.sku, command.expected_version)

    return await _write(keyed, command.cart_id, change, deps)


async def mark_checked_out(command: MarkCheckedOut, deps: CartDeps) -> Cart:
    """Freeze the cart by the order; the same order again is a no-op, another is refused
    (with the existing order id in the error's metadata), whatever the idempotency key."""
    keyed = KeyedRequest(
        scope=command.customer_id,
        key=command.idempotency_key,
        operation="MarkCheckedOut",
        fields={"cart": str(command.cart_id), "order": str(command.order_id)},
    )

    async def change(cart: Cart, uow: AbstractCartUnitOfWork) -> Cart:
        return rules.mark_checked_out(cart, command.order_id)

    return await _write(keyed, command.cart_id, change, deps)


async def price_cart(cart_id: uuid.UUID, customer_id: str, deps: CartDeps) -> PricedCart:
    """The cart priced against the catalog as it is now, from PostgreSQL (never the cache:
    checkout must see the committed cart and current prices)."""
    async with deps.unit_of_work() as uow:
        found = await uow.carts.get(cart_id)
        cart = rules.owned_by(found, cart_id, customer_id)
        catalog = await uow.catalog.many([line.sku for line in cart.lines])
        now = await uow.now()
    return pricing.price(cart, catalog, default_currency=deps.default_currency, now=now)


Change = Callable[[Cart, AbstractCartUnitOfWork], Awaitable[Cart]]
"""One cart change: the cart as loaded under lock, to the cart as it should be saved."""


async def _write(keyed: KeyedRequest, cart_id: uuid.UUID, change: Change, deps: CartDeps) -> Cart:
    """Run one cart change under the cart's row lock, once per idempotency key.

    Two writers with the same expected version serialize on the lock; the second sees the
    version the first wrote and is refused, so exactly one of them wins.
    """
    async with deps.unit_of_work() as uow:
        stored = await uow.keys.claim(keyed)
        if stored is not None:
            idempotency.check_replay(keyed, stored.fingerprint)
            return cart_from_json(stored.response)
        locked = await uow.carts.get(cart_id, for_update=True)
        before = rules.owned_by(locked, cart_id, keyed.scope)
        after = await change(before, uow)
        changed = after.version != before.version
        saved = await uow.carts.save(before, after) if changed else before
        if changed:
            await uow.invalidations.owe(cart_id, saved.version)
        await uow.keys.complete(keyed, cart_to_json(saved))
    if changed:
        await send_invalidation(cart_id, saved.version, deps)
    return saved


async def send_invalidation(cart_id: uuid.UUID, version: int, deps: CartDeps) -> None:
    """Tombstone the cart in Redis and forget the owed invalidation once Redis has it."""
    if await deps.cache.invalidate(cart_id, version):
        async with deps.unit_of_work() as uow:
            await uow.invalidations.settle([(cart_id, version)])
