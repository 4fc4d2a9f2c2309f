"""The cart service over real gRPC, a real PostgreSQL and a real Redis: the catalog, carts owned
by their customer, optimistic versions under real races, idempotency keys, limits and bad input
that write nothing, pricing for checkout, and one order per cart."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.cart.v1 import cart_service_pb2 as pb
from marketplace.common.v1 import ids_pb2
from marketplace_platform import errors
from marketplace_platform.grpc_errors import from_rpc_error
from marketplace_platform.grpc_server import RunningServer
from marketplace_platform.ids import new_id
from services.cart import bootstrap as cart
from services.cart.adapters.tables import cart_lines, carts, idempotency_keys, products
from tests.support.carts import (
    add_product,
    cache_health,
    cart_stub,
    customer,
    fresh_sku,
    get_cart,
    money,
    new_cart,
    running_cart,
    set_quantity,
    set_request,
)
from tests.support.database import table_counts
from tests.support.grpc_probes import SERVING, health_status
from tests.support.keys import idempotency_key as key
from tests.support.refusals import refusal

if TYPE_CHECKING:
    from marketplace.cart.v1.cart_service_pb2_grpc import CartServiceAsyncStub as Stub

RACERS = 30
WITHIN = 30.0


pytestmark = pytest.mark.engine(db_pool_size=20)


@pytest.fixture(scope="module")
async def server(engine: AsyncEngine, redis_server_url: str) -> AsyncIterator[RunningServer]:
    async with running_cart(engine, redis_server_url) as running:
        yield running


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[Stub]:
    async with cart_stub(server) as fresh:
        yield fresh


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    return await table_counts(engine, products, carts, cart_lines, idempotency_keys)


async def test_products_are_upserted_and_read_with_defaults(stub: Stub) -> None:
    sku = fresh_sku()
    request = pb.UpsertProductRequest(
        idempotency_key=key(), sku=ids_pb2.Sku(value=sku), name="Mug", price=money(1299)
    )

    created = (await stub.UpsertProduct(request)).product
    replayed = (await stub.UpsertProduct(request)).product
    read = (await stub.GetProduct(pb.GetProductRequest(sku=ids_pb2.Sku(value=sku)))).product

    assert (created.merchant_id.value, created.listed, created.price.amount_minor) == (
        "default",
        True,
        1299,
    )
    assert replayed == created
    assert read == created
    reused = pb.UpsertProductRequest()
    reused.CopyFrom(request)
    reused.price.amount_minor = 1
    error = await refusal(stub.UpsertProduct(reused))
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    missing = await refusal(stub.GetProduct(pb.GetProductRequest(sku=ids_pb2.Sku(value="NOPE-1"))))
    assert isinstance(missing, errors.NotFound)


async def test_a_cart_is_created_once_per_key_and_hidden_from_other_customers(stub: Stub) -> None:
    owner = customer()
    request = pb.CreateCartRequest(idempotency_key=key(), customer_id=owner)

    first, *replays = await asyncio.gather(*(stub.CreateCart(request) for _ in range(5)))

    assert {r.cart.cart_id.value for r in replays} == {first.cart.cart_id.value}
    assert (first.cart.version, first.cart.status) == (1, pb.CART_STATUS_OPEN)
    assert first.cart.subtotal == money(0)
    stranger = pb.GetCartRequest(cart_id=first.cart.cart_id, customer_id=customer())
    assert isinstance(await refusal(stub.GetCart(stranger)), errors.NotFound)
    foreign_write = set_request(first.cart, fresh_sku(), 1)
    foreign_write.customer_id.value = "someone-else"
    assert isinstance(await refusal(stub.SetItemQuantity(foreign_write)), errors.NotFound)


async def test_writes_bump_the_version_and_keep_lines_in_the_order_added(stub: Stub) -> None:
    a, b, c = fresh_sku("A"), fresh_sku("B"), fresh_sku("C")
    await add_product(stub, a, 250)
    await add_product(stub, b, 1000)
    await add_product(stub, c, 5)
    cart = await new_cart(stub, customer())

    cart = await set_quantity(stub, cart, b, 2, version=1)
    cart = await set_quantity(stub, cart, a, 4, version=2)
    cart = await set_quantity(stub, cart, c, 1, version=3)
    cart = await set_quantity(stub, cart, b, 3, version=4)
    removal = pb.RemoveItemRequest(
        idempotency_key=key(),
        cart_id=cart.cart_id,
        customer_id=cart.customer_id,
        sku=ids_pb2.Sku(value=c),
        expected_version=5,
    )
    cart = (await stub.RemoveItem(removal)).cart
    absent = pb.RemoveItemRequest()
    absent.CopyFrom(removal)
    absent.idempotency_key, absent.sku.value, absent.expected_version = key(), "ABSENT-1", 0
    unchanged = (await stub.RemoveItem(absent)).cart

    assert cart.version == 6
    assert [(line.sku.value, line.quantity) for line in cart.lines] == [(b, 3), (a, 4)]
    assert [line.line_total.amount_minor for line in cart.lines] == [3000, 1000]
    assert cart.subtotal == money(4000)
    assert unchanged.version == 6
    assert await get_cart(stub, cart) == cart
    stale = await refusal(stub.SetItemQuantity(set_request(cart, a, 1, expected_version=5)))
    assert isinstance(stale, errors.VersionConflict)
    assert stale.metadata["current_version"] == "6"


async def test_of_racing_writes_with_the_same_expected_version_exactly_one_wins(
    server: RunningServer, stub: Stub
) -> None:
    skus = [fresh_sku() for _ in range(RACERS)]
    for sku in skus:
        await add_product(stub, sku)
    cart = await new_cart(stub, customer())

    async def racer(sku: str) -> str:
        async with cart_stub(server) as own:
            try:
                await own.SetItemQuantity(set_request(cart, sku, 1, expected_version=1))
                return "OK"
            except grpc.aio.AioRpcError as error:
                return f"{error.code().name}:{(from_rpc_error(error) or error).__class__.__name__}"

    outcomes = Counter(await asyncio.gather(*(racer(sku) for sku in skus)))

    assert outcomes == {"OK": 1, "ABORTED:VersionConflict": RACERS - 1}
    after = await get_cart(stub, cart)
    assert after.version == 2
    assert len(after.lines) == 1


async def test_a_replayed_write_returns_the_first_answer_and_a_reused_key_is_refused(
    stub: Stub,
) -> None:
    sku = fresh_sku()
    await add_product(stub, sku)
    cart = await new_cart(stub, customer())
    request = set_request(cart, sku, 2, expected_version=1)

    first = (await stub.SetItemQuantity(request)).cart
    replay = (await stub.SetItemQuantity(request)).cart  # version 1 is stale now: still fine
    other = set_request(cart, sku, 3, idempotency_key=request.idempotency_key)
    error = await refusal(stub.SetItemQuantity(other))

    assert replay == first
    assert first.version == 2
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert (await get_cart(stub, cart)).lines[0].quantity == 2


@pytest.mark.parametrize(
    ("change", "bad_field"),
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": 1001}, "quantity"),
        ({"sku": "-bad sku"}, "sku.value"),
        ({"cart_id": "not-a-uuid"}, "cart_id.value"),
        ({"idempotency_key": "short"}, "idempotency_key"),
        ({"expected_version": -1}, "expected_version"),
    ],
)
async def test_bad_input_is_refused_with_field_details_and_writes_nothing(
    stub: Stub, engine: AsyncEngine, change: dict[str, Any], bad_field: str
) -> None:
    sku = fresh_sku()
    await add_product(stub, sku)
    cart = await new_cart(stub, customer())
    request = set_request(cart, sku, 1)
    for name, value in change.items():
        if name in ("sku", "cart_id"):
            getattr(request, name).value = value
        else:
            setattr(request, name, value)
    before = await row_counts(engine)

    error = await refusal(stub.SetItemQuantity(request))

    assert isinstance(error, errors.InvalidArgument)
    assert bad_field in {v.field for v in error.violations}, error.violations
    assert await row_counts(engine) == before
    assert (await get_cart(stub, cart)).version == 1


async def test_unknown_delisted_and_foreign_currency_products_are_refused_and_write_nothing(
    stub: Stub, engine: AsyncEngine
) -> None:
    usd, delisted, eur = fresh_sku(), fresh_sku(), fresh_sku()
    await add_product(stub, usd)
    await add_product(stub, delisted, listed=False)
    await add_product(stub, eur, currency="EUR")
    cart = await set_quantity(stub, await new_cart(stub, customer()), usd, 1)
    before = await row_counts(engine)

    unknown = await refusal(stub.SetItemQuantity(set_request(cart, "UNKNOWN-1", 1)))
    not_for_sale = await refusal(stub.SetItemQuantity(set_request(cart, delisted, 1)))
    foreign = await refusal(stub.SetItemQuantity(set_request(cart, eur, 1)))

    assert (unknown.reason, unknown.metadata) == ("PRODUCT_NOT_FOUND", {"sku": "UNKNOWN-1"})
    assert isinstance(unknown, errors.NotFound)
    assert isinstance(not_for_sale, errors.FailedPrecondition)
    assert not_for_sale.reason == "PRODUCT_DELISTED"
    assert foreign.reason == "CURRENCY_MISMATCH"
    assert await row_counts(engine) == before
    assert await get_cart(stub, cart) == cart


async def test_the_101st_line_is_refused_and_writes_nothing(
    stub: Stub, engine: AsyncEngine
) -> None:
    skus = [fresh_sku() for _ in range(101)]
    await asyncio.gather(*(add_product(stub, sku) for sku in skus))
    cart = await new_cart(stub, customer())
    for sku in skus[:100]:
        cart = await set_quantity(stub, cart, sku, 1)
    before = await row_counts(engine)

    error = await refusal(stub.SetItemQuantity(set_request(cart, skus[100], 1)))
    still_ok = await set_quantity(stub, cart, skus[0], 7)  # changing an existing line is fine

    assert isinstance(error, errors.FailedPrecondition)
    assert (error.reason, error.metadata["max_lines"]) == ("CART_FULL", "100")
    assert len(still_ok.lines) == 100
    after = await row_counts(engine)
    assert (after["cart_lines"], after["carts"]) == (before["cart_lines"], before["carts"])


async def test_pricing_uses_current_prices_and_reports_every_problem(
    stub: Stub, engine: AsyncEngine
) -> None:
    kept, repriced, delisted, gone, recurrenced = (fresh_sku() for _ in range(5))
    for sku in (kept, repriced, delisted, gone, recurrenced):
        await add_product(stub, sku, 100)
    owner = customer()
    cart = await new_cart(stub, owner)
    empty = (
        await stub.PriceCart(pb.PriceCartRequest(cart_id=cart.cart_id, customer_id=owner))
    ).priced_cart
    for sku in (kept, repriced, delisted, gone, recurrenced):
        cart = await set_quantity(stub, cart, sku, 2)
    await add_product(stub, repriced, 150)
    await add_product(stub, delisted, 100, listed=False)
    await add_product(stub, recurrenced, 100, currency="EUR")
    async with engine.begin() as connection:
        await connection.execute(products.delete().where(products.c.sku == gone))

    priced = (
        await stub.PriceCart(pb.PriceCartRequest(cart_id=cart.cart_id, customer_id=owner))
    ).priced_cart

    assert [problem.kind for problem in empty.problems] == [pb.PRICING_PROBLEM_KIND_EMPTY_CART]
    assert [(line.sku.value, line.unit_price.amount_minor) for line in priced.lines] == [
        (kept, 100),
        (repriced, 150),
    ]
    assert priced.subtotal == money(500)
    assert {(p.sku.value, p.kind) for p in priced.problems} == {
        (delisted, pb.PRICING_PROBLEM_KIND_DELISTED),
        (gone, pb.PRICING_PROBLEM_KIND_UNKNOWN_PRODUCT),
        (recurrenced, pb.PRICING_PROBLEM_KIND_CURRENCY_MISMATCH),
    }
    assert priced.version == cart.version
    stranger = pb.PriceCartRequest(cart_id=cart.cart_id, customer_id=customer())
    assert isinstance(await refusal(stub.PriceCart(stranger)), errors.NotFound)


async def test_a_cart_produces_at_most_one_order(stub: Stub, server: RunningServer) -> None:
    sku = fresh_sku()
    await add_product(stub, sku)
    cart = await set_quantity(stub, await new_cart(stub, customer()), sku, 1)
    orders = [str(new_id()) for _ in range(10)]

    async def check_out(order_id: str) -> str:
        async with cart_stub(server) as own:
            request = pb.MarkCheckedOutRequest(
                idempotency_key=key(),
                cart_id=cart.cart_id,
                customer_id=cart.customer_id,
                order_id=ids_pb2.OrderId(value=order_id),
            )
            try:
                await own.MarkCheckedOut(request)
                return "OK"
            except grpc.aio.AioRpcError as error:
                refused = from_rpc_error(error)
                assert refused is not None
                return refused.metadata["existing_order_id"]

    outcomes = await asyncio.gather(*(check_out(order) for order in orders))

    [winner] = [order for order, outcome in zip(orders, outcomes, strict=True) if outcome == "OK"]
    assert [o for o in outcomes if o != "OK"] == [winner] * (len(orders) - 1)
    frozen = await get_cart(stub, cart)
    assert (frozen.status, frozen.order_id.value) == (pb.CART_STATUS_CHECKED_OUT, winner)
    again = await stub.MarkCheckedOut(
        pb.MarkCheckedOutRequest(
            idempotency_key=key(),
            cart_id=cart.cart_id,
            customer_id=cart.customer_id,
            order_id=ids_pb2.OrderId(value=winner),
        )
    )
    assert again.cart == frozen  # the same order again is a no-op
    write = await refusal(stub.SetItemQuantity(set_request(frozen, sku, 5)))
    assert (write.reason, write.metadata["existing_order_id"]) == ("CART_CHECKED_OUT", winner)
    priced = (
        await stub.PriceCart(
            pb.PriceCartRequest(cart_id=cart.cart_id, customer_id=cart.customer_id)
        )
    ).priced_cart
    assert (priced.status, priced.order_id.value) == (pb.CART_STATUS_CHECKED_OUT, winner)


async def test_the_service_and_its_cache_report_serving(server: RunningServer) -> None:
    assert await health_status(f"127.0.0.1:{server.port}", cart.SERVICE_NAME) == SERVING
    assert await cache_health(server) == SERVING
