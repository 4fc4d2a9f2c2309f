"""SQL statements and commits per checkout, counted (not timed) on each service's own engine:
PlaceOrder, every saga step of one confirmed order, and the durable saga engine's own
bookkeeping for that order. Each count must stay within a budget justified below, so a change
that adds a round trip to the hot path fails here before it shows up in `make bench`."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.cart.v1 import cart_service_pb2 as cart_pb
from marketplace.cart.v1 import cart_service_pb2_grpc as cart_grpc
from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.checkout.v1 import checkout_service_pb2_grpc as checkout_grpc
from marketplace.common.v1 import address_pb2, ids_pb2, money_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as inventory_pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from marketplace_platform.grpc_server import RunningServer
from marketplace_platform.ids import new_id
from marketplace_platform.saga.local import LocalSagaStarter
from saga_tasks import clients
from saga_tasks.registry import HANDLERS
from tests.support.database import MakeEngine
from tests.support.psp import RunningPsp
from tests.support.servers import ServiceServers
from workers.saga_engine.asl.machine import StateMachine
from workers.saga_engine.engine import EngineOptions, SagaEngine
from workers.saga_engine.task_invoker import InProcessTaskInvoker

if TYPE_CHECKING:
    from marketplace.cart.v1.cart_service_pb2_grpc import CartServiceAsyncStub as CartStub
    from marketplace.checkout.v1.checkout_service_pb2_grpc import (
        CheckoutServiceAsyncStub as CheckoutStub,
    )
    from marketplace.inventory.v1.inventory_service_pb2_grpc import (
        InventoryServiceAsyncStub as InventoryStub,
    )

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("cart", "inventory", "payment", "checkout", "saga")

STATE_MACHINE = f"checkout-budget-{uuid.uuid4().hex[:8]}"


@dataclass
class Tally:
    """Statements and transaction ends seen on one engine."""

    statements: list[str] = field(default_factory=list)
    commits: int = 0
    rollbacks: int = 0

    def snapshot(self) -> tuple[int, int, int]:
        return len(self.statements), self.commits, self.rollbacks


@dataclass(frozen=True)
class Cost:
    """What one operation cost on one engine."""

    statements: int
    commits: int
    rollbacks: int
    sql: tuple[str, ...]


class Meter:
    """One counted engine per service; `measure` returns what a block cost on each."""

    def __init__(self, engines: Mapping[str, AsyncEngine]) -> None:
        self.engines = dict(engines)
        self.tallies = {name: Tally() for name in engines}
        for name, engine in engines.items():
            tally = self.tallies[name]
            event.listen(engine.sync_engine, "before_cursor_execute", _recorder(tally))
            event.listen(engine.sync_engine, "commit", _ender(tally, "commits"))
            event.listen(engine.sync_engine, "rollback", _ender(tally, "rollbacks"))

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        return {name: tally.snapshot() for name, tally in self.tallies.items()}

    def since(self, before: Mapping[str, tuple[int, int, int]]) -> dict[str, Cost]:
        """The cost on each engine since `before` (engines that did nothing are left out)."""
        costs = {}
        for name, tally in self.tallies.items():
            statements, commits, rollbacks = before[name]
            cost = Cost(
                statements=len(tally.statements) - statements,
                commits=tally.commits - commits,
                rollbacks=tally.rollbacks - rollbacks,
                sql=tuple(tally.statements[statements:]),
            )
            if cost.statements or cost.commits or cost.rollbacks:
                costs[name] = cost
        return costs


def _recorder(tally: Tally) -> Any:
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        tally.statements.append(" ".join(statement.split())[:160])

    return record


def _ender(tally: Tally, attribute: str) -> Any:
    def end(conn: Any) -> None:
        setattr(tally, attribute, getattr(tally, attribute) + 1)

    return end


async def always_ready() -> None:
    """A readiness probe that issues no SQL, so probes never land in a count."""


@pytest.fixture(scope="module")
def meter(make_engine: MakeEngine) -> Meter:
    return Meter({name: make_engine(db_pool_size=4) for name in SERVICES})


@pytest.fixture(scope="module")
async def servers(
    meter: Meter, grpc_servers: ServiceServers, psp: RunningPsp, redis_server_url: str
) -> dict[str, RunningServer]:
    running: dict[str, RunningServer] = {}
    # The cart cache off: a cold cart (the common case at checkout) reads PostgreSQL.
    running["cart"] = await grpc_servers.cart(
        engine=meter.engines["cart"],
        ready=always_ready,
        redis_url=redis_server_url,
        cart_cache_enabled=False,
    )
    running["inventory"] = await grpc_servers.inventory(
        engine=meter.engines["inventory"], ready=always_ready
    )
    running["payment"] = await grpc_servers.payment(
        engine=meter.engines["payment"],
        ready=always_ready,
        psp_url=psp.url,
        psp_timeout_seconds=2.0,
        psp_breaker_failures=1000,
    )
    # The saga starter as the local stack wires it, on checkout's own engine, but under a state
    # machine name of this module's: executions other tests of the session started and left
    # are not this engine's to run (they would land in the counts).
    starter = LocalSagaStarter(meter.engines["checkout"], state_machine=STATE_MACHINE)
    running["checkout"] = await grpc_servers.checkout(
        engine=meter.engines["checkout"],
        ready=always_ready,
        ports={"saga": starter},
        cart_target=f"127.0.0.1:{running['cart'].port}",
        payment_target=f"127.0.0.1:{running['payment'].port}",
    )
    return running


@pytest.fixture(scope="module")
def module_targets(servers: dict[str, RunningServer]) -> Iterator[None]:
    """Point the saga's adapters at the test servers, as the stack's *_TARGET variables do."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("inventory", "payment", "checkout"):
            patch.setenv(f"{name.upper()}_TARGET", f"127.0.0.1:{servers[name].port}")
        clients.reset()
        yield
    clients.reset()


@dataclass(frozen=True)
class Shop:
    cart: CartStub
    checkout: CheckoutStub
    inventory: InventoryStub


@pytest.fixture(scope="module")
async def shop_for_module(
    servers: dict[str, RunningServer], module_targets: None
) -> AsyncIterator[Shop]:
    channels = {
        name: grpc.aio.insecure_channel(f"127.0.0.1:{servers[name].port}")
        for name in ("cart", "checkout", "inventory")
    }
    yield Shop(
        cart_grpc.CartServiceStub(channels["cart"]),
        checkout_grpc.CheckoutServiceStub(channels["checkout"]),
        inventory_grpc.InventoryServiceStub(channels["inventory"]),
    )
    for channel in channels.values():
        await channel.close()


async def filled_cart(shop: Shop) -> tuple[ids_pb2.CustomerId, ids_pb2.CartId]:
    """A stocked product and a customer's cart holding 2 of it."""
    unique = new_id().hex
    sku = ids_pb2.Sku(value=f"BUDGET-{unique[-12:]}")
    customer = ids_pb2.CustomerId(value=f"customer-{unique[-12:]}")
    await shop.inventory.SetStock(
        inventory_pb.SetStockRequest(idempotency_key=f"stock-{unique}", sku=sku, on_hand=10)
    )
    await shop.cart.UpsertProduct(
        cart_pb.UpsertProductRequest(
            idempotency_key=f"product-{unique}", sku=sku, name="Mug",
            price=money_pb2.Money(amount_minor=1250, currency="USD"),
            merchant_id=ids_pb2.MerchantId(value="acme"),
        )
    )  # fmt: skip
    created = await shop.cart.CreateCart(
        cart_pb.CreateCartRequest(idempotency_key=f"cart-{unique}", customer_id=customer)
    )
    await shop.cart.SetItemQuantity(
        cart_pb.SetItemQuantityRequest(
            idempotency_key=f"line-{unique}", cart_id=created.cart.cart_id,
            customer_id=customer, sku=sku, quantity=2,
        )
    )  # fmt: skip
    return customer, created.cart.cart_id


def place_request(customer: ids_pb2.CustomerId, cart_id: ids_pb2.CartId) -> Any:
    return checkout_pb.PlaceOrderRequest(
        idempotency_key=f"place-{new_id().hex}", customer_id=customer, cart_id=cart_id,
        payment_method="pm_card_visa",
        shipping_address=address_pb2.Address(
            name="Ada Lovelace", line1="1 Main St", city="Springfield", postal_code="12345",
            country="US",
        ),
    )  # fmt: skip


def describe(costs: Mapping[str, Cost]) -> str:
    """Every statement per engine, for the failure message."""
    return json.dumps({name: list(cost.sql) for name, cost in costs.items()}, indent=1)


# Budgets per operation and service: (statements, commits). What each must do, and why:
PLACE_ORDER_BUDGET = {
    # Cart's CheckoutCart: claim the idempotency key; PriceCart reads the cart, its lines, their
    # products' current prices and the transaction's now() in one statement; MarkCheckedOut
    # locks and reads the cart with its lines in one, marks it checked out (version bump),
    # records the cache invalidation and stores the response: one transaction for the key, one
    # for the change; 6 statements.
    "cart": (6, 2),
    # Checkout: claim the idempotency key (INSERT ... ON CONFLICT DO NOTHING RETURNING; read
    # only on conflict, to replay or refuse), then in ONE transaction the order and its lines in
    # one INSERT, the OrderPending outbox row and the completed key by one upsert; then start
    # the saga (execution + its first history row, one statement) and stamp saga_started_at,
    # each its own transaction so a crash between them is found by the completer; 7 statements.
    "checkout": (7, 4),
}
SAGA_STEP_BUDGET = {
    # Read the order aggregate (order, lines, shipments) in one statement; store the tax.
    "CalculateTaxFunctionArn": {"checkout": (2, 1)},
    # The same read; store the fraud decision.
    "FraudCheckFunctionArn": {"checkout": (2, 1)},
    # Insert the reservation with its lines in one statement (nothing if the order has one:
    # then look it up, a repeat returns it), the ledger movements, the outbox row, and take the
    # stock of every SKU in one UPDATE: one transaction, 4 statements whatever the lines.
    "ReserveInventoryFunctionArn": {"inventory": (4, 1)},
    # Record the payment with its operation in one statement (a CTE) and commit BEFORE calling
    # the PSP (a crash leaves a known pending operation, resolved by querying the PSP); then
    # lock the payment and the operation in one statement, record the outcome on both in one
    # (CTEs; it reads the ledger too, after the lock), and the outbox row: 2 transactions, 4
    # statements; the answer is what was written, nothing is read back.
    "AuthorizePaymentFunctionArn": {"payment": (4, 2)},
    # Read the order aggregate, set CONFIRMED with every merchant's shipment request in one
    # statement (a CTE), then the OrderPlaced and every ShipmentRequested outbox row in one
    # INSERT (a unit of work writes its transaction's events together, just before it
    # commits): one transaction, 3 statements whatever the merchants.
    "ConfirmOrderFunctionArn": {"checkout": (3, 1)},
    # Read the reservation with the transaction's now() (its expiry), close it, one movement,
    # one outbox row, move the stock from reserved to sold in one UPDATE: one transaction.
    "CommitReservationFunctionArn": {"inventory": (5, 1)},
}
# The durable saga engine for one execution of 6 Task states (the Parallel counts as one state
# that holds two): claim it; then one statement and one commit per Task called (the position
# and every event since the last write, TaskScheduled last, appended by the same statement,
# so a SIGKILLed engine resumes at that Task, which is idempotent), the Parallel's two branches
# in one write; then end it (the last Task's result, the Succeed state, the end). The eighth
# is run_until_idle's claim that finds nothing due. 7 + 1 statements, each its commit.
SAGA_ENGINE_BUDGET = {"saga": (8, 8)}


async def place_and_run(shop: Shop, meter: Meter) -> tuple[dict[str, Cost], dict[str, Any]]:
    """Place one order and run its saga to the end; the costs of PlaceOrder and of each step."""
    customer, cart_id = await filled_cart(shop)
    before = meter.snapshot()
    placed = await shop.checkout.PlaceOrder(place_request(customer, cart_id))
    place_costs = meter.since(before)
    machine = StateMachine.from_definition(
        json.loads((REPO / "deploy" / "ecs" / "checkout_saga.asl.json").read_text())
    )
    step_costs: dict[str, dict[str, Cost]] = {}

    def counted(resource: str) -> Any:
        def handler(event_: dict[str, Any], context: Any) -> Any:
            before = meter.snapshot()
            try:
                return HANDLERS[resource](event_, context)
            finally:
                # The engine's own bookkeeping is counted for the whole execution below.
                costs = meter.since(before)
                costs.pop("saga", None)
                step_costs[resource] = costs

        return handler

    # One task thread: the Parallel's two branches run one after the other, so each step's
    # statements are its own (nothing else runs on these engines meanwhile).
    # A lease far longer than the test: no renewal lands in the count.
    options = EngineOptions(owner="budget", state_machine_name=STATE_MACHINE, lease_seconds=3_600)
    with ThreadPoolExecutor(max_workers=1) as executor:
        invoker = InProcessTaskInvoker(
            {resource: counted(resource) for resource in HANDLERS}, executor
        )
        saga = SagaEngine.on(meter.engines["saga"], machine, invoker, options)
        before = meter.snapshot()
        await saga.run_until_idle()
        whole = meter.since(before)
    order = await shop.checkout.GetOrder(
        checkout_pb.GetOrderRequest(order_id=placed.order_id, customer_id=customer)
    )
    assert order.order.status == checkout_pb.ORDER_STATUS_CONFIRMED
    return place_costs, {"steps": step_costs, "whole": whole}


@pytest.fixture(scope="module")
async def one_checkout(shop_for_module: Shop, meter: Meter) -> tuple[dict[str, Cost], Any]:
    """The costs of the second order: the first warms pools, channels and first-connect SQL."""
    await place_and_run(shop_for_module, meter)
    return await place_and_run(shop_for_module, meter)


def within(costs: Mapping[str, Cost], budget: Mapping[str, tuple[int, int]]) -> list[str]:
    """Each way `costs` exceeds `budget` (an engine with no budget may not be touched)."""
    over = []
    for name, cost in costs.items():
        statements, commits = budget.get(name, (0, 0))
        if cost.statements > statements or cost.commits > commits:
            over.append(
                f"{name}: {cost.statements} statements, {cost.commits} commits"
                f" > budget {statements}, {commits}"
            )
    return over


async def test_place_order_stays_within_its_statement_and_commit_budget(
    one_checkout: tuple[dict[str, Cost], Any],
) -> None:
    place_costs, _ = one_checkout
    assert set(place_costs) == set(PLACE_ORDER_BUDGET), describe(place_costs)
    assert within(place_costs, PLACE_ORDER_BUDGET) == [], describe(place_costs)
    assert all(cost.rollbacks == 0 for cost in place_costs.values())


async def test_each_saga_step_of_a_confirmed_order_stays_within_its_budget(
    one_checkout: tuple[dict[str, Cost], Any],
) -> None:
    _, saga = one_checkout
    steps: dict[str, dict[str, Cost]] = saga["steps"]
    assert set(steps) == set(SAGA_STEP_BUDGET)
    for step, costs in steps.items():
        assert within(costs, SAGA_STEP_BUDGET[step]) == [], f"{step}: {describe(costs)}"
        assert all(cost.rollbacks == 0 for cost in costs.values()), f"{step}: {describe(costs)}"


async def test_the_saga_engines_own_bookkeeping_for_one_order_stays_within_its_budget(
    one_checkout: tuple[dict[str, Cost], Any],
) -> None:
    _, saga = one_checkout
    whole: dict[str, Cost] = saga["whole"]
    engine = {"saga": whole["saga"]}
    assert within(engine, SAGA_ENGINE_BUDGET) == [], describe(engine)
    # Everything the saga did on the services' engines is accounted for by its steps.
    for service in ("inventory", "payment", "checkout"):
        by_steps = sum(
            costs[service].statements for costs in saga["steps"].values() if service in costs
        )
        assert whole[service].statements == by_steps
