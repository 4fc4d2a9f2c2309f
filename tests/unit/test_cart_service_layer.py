"""Cart use cases over an in-memory unit of work: idempotent replays, refused keys, versions,
sellable products, checkout once, owed cache invalidations. No database, no Redis.

The fakes keep PostgreSQL's behaviour that the use cases rely on: a unit of work commits on a
clean exit and rolls everything back on an error (a refused change leaves no claimed key and
no invalidation owed), a key's first response is what replays get, an owed invalidation is
forgotten only up to the version Redis was given.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest

from marketplace_platform.errors import IdempotencyKeyReused, VersionConflict
from marketplace_platform.money import Money
from services.cart.domain.cart import (
    Cart,
    CartCheckedOut,
    CartNotFound,
    CartStatus,
    ProductDelisted,
    ProductNotFound,
)
from services.cart.domain.catalog import Product
from services.cart.domain.idempotency import KeyedRequest, StoredRequest
from services.cart.domain.pricing import ProblemKind
from services.cart.service_layer import carts, catalog
from services.cart.service_layer.cache_upkeep import settle_owed_invalidations
from services.cart.service_layer.deps import CartDeps
from services.cart.service_layer.ports import CacheState, CartCache, Pending
from tests.support.in_memory import InMemoryUnitOfWork

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CUSTOMER = "customer-1"


@dataclass
class Tables:
    """What the fake database holds: one dict per table."""

    carts: dict[uuid.UUID, Cart] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    keys: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)
    owed: dict[uuid.UUID, int] = field(default_factory=dict)  # in order of recording

    def copy(self) -> Tables:
        """A working copy for one transaction (the values are immutable, the dicts are not)."""
        return Tables(dict(self.carts), dict(self.products), dict(self.keys), dict(self.owed))


class FakeCarts:
    """Carts in a dict, stamped with the transaction's time like PostgreSQL's `now()`."""

    def __init__(self, tables: Tables, now: datetime) -> None:
        self.tables = tables
        self.now = now

    async def create(self, *, cart_id: uuid.UUID, customer_id: str) -> Cart:
        """Store an empty OPEN cart at version 1."""
        cart = Cart(
            cart_id=cart_id,
            customer_id=customer_id,
            version=1,
            status=CartStatus.OPEN,
            lines=(),
            order_id=None,
            created_at=self.now,
            updated_at=self.now,
        )
        self.tables.carts[cart_id] = cart
        return cart

    async def get(self, cart_id: uuid.UUID, *, for_update: bool = False) -> Cart | None:
        """The stored cart, or None."""
        return self.tables.carts.get(cart_id)

    async def save(self, before: Cart, after: Cart) -> Cart:
        """Store `after` over `before`, which must be what is stored (it was loaded under lock)."""
        assert self.tables.carts[before.cart_id] == before, "saved over a cart not as loaded"
        saved = replace(after, updated_at=self.now)
        self.tables.carts[after.cart_id] = saved
        return saved


class FakeCatalog:
    """Products in a dict."""

    def __init__(self, tables: Tables, now: datetime) -> None:
        self.tables = tables
        self.now = now

    async def upsert(self, product: Product) -> Product:
        """Store the product, keeping its creation time when it replaces one."""
        existing = self.tables.products.get(product.sku)
        created = existing.created_at if existing is not None else self.now
        stored = replace(product, created_at=created, updated_at=self.now)
        self.tables.products[product.sku] = stored
        return stored

    async def get(self, sku: str) -> Product | None:
        """One product, or None."""
        return self.tables.products.get(sku)

    async def many(self, skus: Collection[str]) -> dict[str, Product]:
        """The products of the SKUs that exist."""
        return {sku: self.tables.products[sku] for sku in skus if sku in self.tables.products}


class FakeKeys:
    """Idempotency keys: (scope, key) -> (fingerprint, response once completed)."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    async def claim(self, request: KeyedRequest) -> StoredRequest | None:
        """Claim an unused key (None), or return what its first use stored."""
        found = self.tables.keys.get((request.scope, request.key))
        if found is None:
            self.tables.keys[(request.scope, request.key)] = (request.fingerprint, None)
            return None
        fingerprint, response = found
        return StoredRequest(fingerprint, response or "")

    async def complete(self, request: KeyedRequest, response: str) -> None:
        """Store the response of the claimed key."""
        fingerprint, _ = self.tables.keys[(request.scope, request.key)]
        self.tables.keys[(request.scope, request.key)] = (fingerprint, response)


class FakeInvalidations:
    """Owed invalidations: the newest version owed per cart, oldest recording first."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    async def owe(self, cart_id: uuid.UUID, version: int) -> None:
        """Owe the cart's version (the greater one if one is owed already), recorded now."""
        previous = self.tables.owed.pop(cart_id, version)
        self.tables.owed[cart_id] = max(previous, version)

    async def pending(self, *, limit: int) -> list[Pending]:
        """The oldest owed."""
        return list(self.tables.owed.items())[:limit]

    async def settle(self, settled: Sequence[Pending]) -> None:
        """Forget what Redis has; a newer version owed meanwhile stays."""
        for cart_id, version in settled:
            if self.tables.owed.get(cart_id, version + 1) <= version:
                del self.tables.owed[cart_id]


class FakeDatabase:
    """The committed tables, and how many transactions committed or rolled back."""

    def __init__(self) -> None:
        self.tables = Tables()
        self.commits = 0
        self.rollbacks = 0

    def unit_of_work(self) -> FakeUnitOfWork:
        """A fresh unit of work on this database."""
        return FakeUnitOfWork(self)


class FakeUnitOfWork(InMemoryUnitOfWork):
    """A transaction over a working copy of the tables: committed on a clean exit, dropped on
    an error."""

    carts: FakeCarts
    catalog: FakeCatalog
    keys: FakeKeys
    invalidations: FakeInvalidations

    def __init__(self, database: FakeDatabase) -> None:
        self.database = database

    def begin(self) -> None:
        self.working = self.database.tables.copy()
        self.carts = FakeCarts(self.working, NOW)
        self.catalog = FakeCatalog(self.working, NOW)
        self.keys = FakeKeys(self.working)
        self.invalidations = FakeInvalidations(self.working)

    def commit(self) -> None:
        self.database.tables = self.working
        self.database.commits += 1

    def roll_back(self) -> None:
        self.database.rollbacks += 1

    async def now(self) -> datetime:
        """The transaction's time."""
        return NOW


class RecordingCache(CartCache):
    """A cache that holds no carts and records the tombstones it is given; unreachable on
    demand."""

    def __init__(self, *, reachable: bool = True) -> None:
        self.reachable = reachable
        self.tombstones: list[Pending] = []
        self.state = CacheState.DOWN

    @property
    def trusted(self) -> bool:
        """Whether it is TRUSTED."""
        return self.state is CacheState.TRUSTED

    async def read(self, cart_id: uuid.UUID) -> Cart | None:
        """Always a miss."""
        return None

    async def fill(self, cart: Cart) -> None:
        """Nothing is kept."""

    async def invalidate(self, cart_id: uuid.UUID, version: int) -> bool:
        """Record the tombstone when reachable."""
        if self.reachable:
            self.tombstones.append((cart_id, version))
        return self.reachable

    async def ping(self) -> bool:
        """Whether it is reachable."""
        return self.reachable

    def begin_recovery(self) -> None:
        """DOWN -> RECOVERING."""
        self.state = CacheState.RECOVERING

    async def restored(self) -> None:
        """RECOVERING -> TRUSTED."""
        self.state = CacheState.TRUSTED

    async def close(self) -> None:
        """Nothing to release."""


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def cache() -> RecordingCache:
    return RecordingCache()


@pytest.fixture
def deps(database: FakeDatabase, cache: RecordingCache) -> CartDeps:
    return CartDeps(unit_of_work=database.unit_of_work, cache=cache, default_currency="USD")


async def add_product(
    deps: CartDeps, sku: str, amount: int = 500, *, listed: bool = True, currency: str = "USD"
) -> Product:
    product = Product(
        sku=sku, merchant_id="m1", name=sku, price=Money(amount, currency), listed=listed
    )
    return await catalog.upsert_product(
        catalog.UpsertProduct(idempotency_key=f"put-{sku}-{amount}-{listed}", product=product),
        deps,
    )


async def new_cart(deps: CartDeps, key: str = "create-1", customer: str = CUSTOMER) -> Cart:
    return await carts.create_cart(
        carts.CreateCart(idempotency_key=key, customer_id=customer), deps
    )


def set_quantity(
    cart: Cart, sku: str, quantity: int, expected_version: int, key: str
) -> carts.SetItemQuantity:
    return carts.SetItemQuantity(
        idempotency_key=key,
        cart_id=cart.cart_id,
        customer_id=cart.customer_id,
        sku=sku,
        quantity=quantity,
        expected_version=expected_version,
    )


async def test_a_replayed_create_cart_returns_the_same_cart_and_stores_one(
    deps: CartDeps, database: FakeDatabase
) -> None:
    first = await new_cart(deps)
    replay = await new_cart(deps)
    others = await new_cart(deps, customer="customer-2")  # keys are scoped to the customer

    assert replay == first
    assert (first.version, first.status, first.lines) == (1, CartStatus.OPEN, ())
    assert others.cart_id != first.cart_id
    assert set(database.tables.carts) == {first.cart_id, others.cart_id}


async def test_a_key_reused_for_different_fields_is_refused_and_changes_nothing(
    deps: CartDeps, database: FakeDatabase
) -> None:
    await add_product(deps, "A")
    await add_product(deps, "B")
    cart = await new_cart(deps)
    added = await carts.set_item_quantity(set_quantity(cart, "A", 2, 1, "add"), deps)

    with pytest.raises(IdempotencyKeyReused) as refused:
        await carts.set_item_quantity(set_quantity(added, "B", 1, 2, "add"), deps)

    assert refused.value.metadata == {"idempotency_key": "add"}
    assert database.tables.carts[cart.cart_id] == added
    assert [(line.sku, line.quantity) for line in added.lines] == [("A", 2)]
    # The same key for the same request replays the first answer, even after later changes.
    later = await carts.set_item_quantity(set_quantity(added, "A", 5, 2, "more"), deps)
    assert await carts.set_item_quantity(set_quantity(cart, "A", 2, 1, "add"), deps) == added
    assert database.tables.carts[cart.cart_id] == later


async def test_a_stale_expected_version_is_refused_and_rolls_back_its_key(
    deps: CartDeps, database: FakeDatabase
) -> None:
    await add_product(deps, "A", 250)
    cart = await new_cart(deps)
    winner = await carts.set_item_quantity(set_quantity(cart, "A", 2, 1, "first"), deps)
    rollbacks = database.rollbacks

    with pytest.raises(VersionConflict) as conflict:
        await carts.set_item_quantity(set_quantity(cart, "A", 7, 1, "second"), deps)

    assert conflict.value.metadata["current_version"] == "2"
    assert database.rollbacks == rollbacks + 1
    assert database.tables.carts[cart.cart_id] == winner
    assert (CUSTOMER, "second") not in database.tables.keys  # the refused claim was undone
    retried = await carts.set_item_quantity(set_quantity(winner, "A", 7, 2, "second"), deps)
    assert retried.version == 3
    assert [(line.sku, line.quantity, line.line_total) for line in retried.lines] == [
        ("A", 7, Money(1750, "USD"))
    ]
    anyway = await carts.set_item_quantity(set_quantity(cart, "A", 1, 0, "any"), deps)
    assert anyway.version == 4  # expected version 0: whatever the version


async def test_unknown_and_unlisted_products_are_refused(
    deps: CartDeps, database: FakeDatabase
) -> None:
    await add_product(deps, "GONE", listed=False)
    cart = await new_cart(deps)

    with pytest.raises(ProductDelisted):
        await carts.set_item_quantity(set_quantity(cart, "GONE", 1, 1, "k1"), deps)
    with pytest.raises(ProductNotFound):
        await carts.set_item_quantity(set_quantity(cart, "NEVER", 1, 1, "k2"), deps)

    assert database.tables.carts[cart.cart_id] == cart
    assert database.tables.owed == {}
    with pytest.raises(ProductNotFound):
        await catalog.get_product("NEVER", deps)
    assert (await catalog.get_product("GONE", deps)).listed is False  # readable, not sellable


async def test_removing_a_missing_line_changes_nothing_and_owes_nothing(
    deps: CartDeps, database: FakeDatabase, cache: RecordingCache
) -> None:
    await add_product(deps, "A")
    cart = await new_cart(deps)
    added = await carts.set_item_quantity(set_quantity(cart, "A", 1, 1, "add"), deps)
    tombstones = list(cache.tombstones)
    remove = carts.RemoveItem(
        idempotency_key="rm",
        cart_id=cart.cart_id,
        customer_id=CUSTOMER,
        sku="ZZZ",
        expected_version=2,
    )

    unchanged = await carts.remove_item(remove, deps)

    assert unchanged == added
    assert database.tables.carts[cart.cart_id] == added
    assert cache.tombstones == tombstones
    assert database.tables.owed == {}
    assert database.tables.keys[(CUSTOMER, "rm")][1] is not None  # answered once and for all
    removed = await carts.remove_item(replace(remove, idempotency_key="rm-a", sku="A"), deps)
    assert (removed.version, removed.lines) == (3, ())


async def test_a_write_owes_its_invalidation_until_the_cache_takes_it(
    deps: CartDeps, database: FakeDatabase, cache: RecordingCache
) -> None:
    await add_product(deps, "A")
    cart = await new_cart(deps)

    cache.reachable = False
    down = await carts.set_item_quantity(set_quantity(cart, "A", 1, 1, "k1"), deps)
    assert database.tables.owed == {cart.cart_id: 2}

    cache.reachable = True
    up = await carts.set_item_quantity(set_quantity(down, "A", 3, 2, "k2"), deps)
    assert cache.tombstones == [(cart.cart_id, 3)]
    assert database.tables.owed == {}  # version 3 was owed over 2, and settled by the write
    assert up.version == 3


async def test_settling_owed_invalidations_tombstones_them_then_trusts_the_cache(
    deps: CartDeps, database: FakeDatabase, cache: RecordingCache
) -> None:
    await add_product(deps, "A")
    cache.reachable = False
    owing = [await new_cart(deps, key=f"create-{n}") for n in range(3)]
    for cart in owing:
        await carts.set_item_quantity(set_quantity(cart, "A", 1, 1, f"add-{cart.cart_id}"), deps)
    assert len(database.tables.owed) == 3

    assert await settle_owed_invalidations(deps, batch=2) is False  # Redis still away
    assert (cache.state, len(database.tables.owed)) == (CacheState.RECOVERING, 3)

    cache.reachable = True
    assert await settle_owed_invalidations(deps, batch=2) is True
    assert sorted(cache.tombstones) == sorted((cart.cart_id, 2) for cart in owing)
    assert database.tables.owed == {}
    assert cache.trusted


async def test_mark_checked_out_freezes_the_cart_for_one_order(
    deps: CartDeps, database: FakeDatabase
) -> None:
    await add_product(deps, "A")
    cart = await new_cart(deps)
    cart = await carts.set_item_quantity(set_quantity(cart, "A", 1, 1, "add"), deps)
    order = uuid.uuid4()
    mark = carts.MarkCheckedOut(
        idempotency_key="mark", cart_id=cart.cart_id, customer_id=CUSTOMER, order_id=order
    )

    frozen = await carts.mark_checked_out(mark, deps)
    again = await carts.mark_checked_out(replace(mark, idempotency_key="mark-again"), deps)

    assert (frozen.status, frozen.order_id, frozen.version) == (CartStatus.CHECKED_OUT, order, 3)
    assert again == frozen
    assert database.tables.carts[cart.cart_id] == frozen
    with pytest.raises(CartCheckedOut) as other_order:
        await carts.mark_checked_out(
            replace(mark, idempotency_key="mark-other", order_id=uuid.uuid4()), deps
        )
    assert other_order.value.metadata["existing_order_id"] == str(order)
    with pytest.raises(CartCheckedOut):
        await carts.set_item_quantity(set_quantity(frozen, "A", 2, 0, "after"), deps)
    assert database.tables.carts[cart.cart_id] == frozen


async def test_another_customers_cart_is_not_found(deps: CartDeps) -> None:
    await add_product(deps, "A")
    cart = await new_cart(deps)

    with pytest.raises(CartNotFound):
        await carts.get_cart(cart.cart_id, "someone-else", deps)
    with pytest.raises(CartNotFound):
        await carts.set_item_quantity(
            replace(set_quantity(cart, "A", 1, 1, "k"), customer_id="someone-else"), deps
        )
    assert await carts.get_cart(cart.cart_id, CUSTOMER, deps) == cart


async def test_pricing_uses_the_catalog_now_and_the_transaction_time(deps: CartDeps) -> None:
    await add_product(deps, "A", 100)
    await add_product(deps, "B", 300)
    cart = await new_cart(deps)
    cart = await carts.set_item_quantity(set_quantity(cart, "A", 2, 1, "a"), deps)
    cart = await carts.set_item_quantity(set_quantity(cart, "B", 1, 2, "b"), deps)
    await add_product(deps, "A", 150)  # repriced
    await add_product(deps, "B", 300, listed=False)  # delisted

    priced = await carts.price_cart(cart.cart_id, CUSTOMER, deps)

    assert [(line.sku, line.unit_price) for line in priced.lines] == [("A", Money(150, "USD"))]
    assert priced.subtotal == Money(300, "USD")
    assert [(p.kind, p.sku) for p in priced.problems] == [(ProblemKind.DELISTED, "B")]
    assert priced.priced_at == NOW


async def test_upsert_product_replays_its_first_answer_and_refuses_other_fields(
    deps: CartDeps, database: FakeDatabase
) -> None:
    product = Product(sku="A", merchant_id="m1", name="A", price=Money(100, "USD"), listed=True)
    command = catalog.UpsertProduct(idempotency_key="put", product=product)

    first = await catalog.upsert_product(command, deps)
    replay = await catalog.upsert_product(command, deps)

    assert replay == first == replace(product, created_at=NOW, updated_at=NOW)
    with pytest.raises(IdempotencyKeyReused):
        await catalog.upsert_product(
            replace(command, product=replace(product, price=Money(200, "USD"))), deps
        )
    assert database.tables.products == {"A": first}
    assert database.tables.keys[("admin", "put")][1] is not None
