"""Inventory's use cases against an in-memory unit of work: the rules that span a transaction
(replays, all-or-nothing holds, releases and returns counted once, expiry) with no database.

The fakes keep one store that a unit of work changes in place and puts back as it was when
the use case raises, as a rolled-back transaction would; the ledger audit is recomputed from
the store, so every test can also check that counts and ledger agree. Races between
transactions are the integration tests' business (tests/integration/test_reservations.py).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.message import Message

from marketplace.events.v1 import envelope_pb2, inventory_events_pb2
from marketplace_platform.errors import FailedPrecondition, InvalidArgument, NotFound
from services.inventory.domain.audit import AuditedSku
from services.inventory.domain.reservation import (
    OutOfStock,
    ReleaseReason,
    Reservation,
    ReservationClosed,
    ReservationLine,
    ReservationMismatch,
    ReservationStatus,
)
from services.inventory.domain.stock import Movement, StockLevel
from services.inventory.service_layer import reservations, stock
from services.inventory.service_layer.deps import InventoryDeps
from services.inventory.service_layer.ports import Holds, Reservations, StockAuditor, StockItems
from services.inventory.service_layer.reservations import (
    FindReservation,
    ReleaseReservation,
    ReserveStock,
)
from services.inventory.service_layer.stock import SetStock
from tests.support.in_memory import InMemoryUnitOfWork

START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=15)


@dataclass
class Store:
    """Everything the fakes keep: what the inventory schema and its outbox would hold."""

    clock: datetime = START
    levels: dict[str, StockLevel] = field(default_factory=dict)
    movements: list[Movement] = field(default_factory=list)
    reservations: dict[uuid.UUID, Reservation] = field(default_factory=dict)
    events: list[Message] = field(default_factory=list)
    commits: int = 0
    rollbacks: int = 0

    def snapshot(self) -> Store:
        """A copy to put back on rollback (the stored values are frozen, so shallow is enough)."""
        return replace(
            self,
            levels=dict(self.levels),
            movements=list(self.movements),
            reservations=dict(self.reservations),
            events=list(self.events),
        )

    def restore(self, before: Store) -> None:
        """Put the state back as it was in `before` (the clock and counters stay)."""
        self.levels, self.movements = before.levels, before.movements
        self.reservations, self.events = before.reservations, before.events


class FakeStockItems(StockItems):
    """Stock levels and the ledger in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, sku: str, *, for_update: bool = False) -> StockLevel | None:
        return self.store.levels.get(sku)

    async def get_or_create_for_update(self, sku: str) -> StockLevel:
        return self.store.levels.setdefault(sku, StockLevel(sku, 0, updated_at=self.store.clock))

    async def save(self, level: StockLevel) -> StockLevel:
        saved = replace(level, updated_at=self.store.clock)
        self.store.levels[level.sku] = saved
        return saved

    async def record(self, *movements: Movement) -> None:
        self.store.movements.extend(movements)


class FakeHolds(Holds):
    """Moves of reserved units on the store's levels; unknown SKUs are left alone, as the SQL
    updates (which only match existing rows) leave them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def hold(self, lines: Sequence[ReservationLine]) -> set[str]:
        held = set()
        for line in sorted(lines):
            level = self.store.levels.get(line.sku)
            if level is not None and level.available >= line.quantity:
                self._put(replace(level, reserved=level.reserved + line.quantity))
                held.add(line.sku)
        return held

    async def settle(self, lines: Sequence[ReservationLine]) -> None:
        for level, units in self._known(lines):
            self._put(
                replace(
                    level,
                    on_hand=level.on_hand - units,
                    reserved=level.reserved - units,
                    sold=level.sold + units,
                )
            )

    async def give_back(self, lines: Sequence[ReservationLine]) -> None:
        for level, units in self._known(lines):
            self._put(replace(level, reserved=level.reserved - units))

    async def restock(self, lines: Sequence[ReservationLine]) -> None:
        for level, units in self._known(lines):
            self._put(replace(level, on_hand=level.on_hand + units, sold=level.sold - units))

    async def available(self, skus: Sequence[str]) -> dict[str, int]:
        return {sku: self.store.levels[sku].available for sku in skus if sku in self.store.levels}

    def _known(self, lines: Sequence[ReservationLine]) -> list[tuple[StockLevel, int]]:
        return [
            (self.store.levels[line.sku], line.quantity)
            for line in sorted(lines)
            if line.sku in self.store.levels
        ]

    def _put(self, level: StockLevel) -> None:
        self.store.levels[level.sku] = replace(level, updated_at=self.store.clock)


class FakeReservations(Reservations):
    """Reservations in the store, one per order, expiring by the store's clock."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(
        self,
        *,
        order_id: uuid.UUID,
        lines: Sequence[ReservationLine],
        fingerprint: str,
        ttl: timedelta,
        status: ReservationStatus = ReservationStatus.ACTIVE,
        release_reason: ReleaseReason | None = None,
    ) -> Reservation | None:
        if order_id in self.store.reservations:
            return None
        now = self.store.clock
        created = Reservation(
            reservation_id=uuid.uuid4(),
            order_id=order_id,
            status=status,
            lines=tuple(lines),
            fingerprint=fingerprint,
            expires_at=now + ttl,
            created_at=now,
            closed_at=None if status is ReservationStatus.ACTIVE else now,
            release_reason=release_reason,
        )
        self.store.reservations[order_id] = created
        return created

    async def by_order(
        self, order_id: uuid.UUID, *, for_update: bool = False
    ) -> Reservation | None:
        return self.store.reservations.get(order_id)

    async def by_id(self, reservation_id: uuid.UUID) -> Reservation | None:
        found = [r for r in self.store.reservations.values() if r.reservation_id == reservation_id]
        return found[0] if found else None

    async def close(
        self,
        reservation: Reservation,
        status: ReservationStatus,
        release_reason: ReleaseReason | None = None,
    ) -> Reservation:
        closed = replace(
            self.store.reservations[reservation.order_id],
            status=status,
            closed_at=self.store.clock,
            release_reason=release_reason,
        )
        self.store.reservations[reservation.order_id] = closed
        return closed

    async def expire_due(self, *, as_of: datetime | None, limit: int) -> list[Reservation]:
        cutoff = as_of if as_of is not None else self.store.clock
        due = sorted(
            (
                r
                for r in self.store.reservations.values()
                if r.status is ReservationStatus.ACTIVE and r.expires_at <= cutoff
            ),
            key=lambda r: r.expires_at,
        )[:limit]
        return [await self.close(r, ReservationStatus.EXPIRED, ReleaseReason.EXPIRED) for r in due]


class FakeAudit(StockAuditor):
    """The audit recomputed from the store's ledger and active reservations."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def recompute(self, skus: Sequence[str] = ()) -> list[AuditedSku]:
        audited = []
        for sku in sorted(skus or self.store.levels):
            if sku not in self.store.levels:
                continue
            level = self.store.levels[sku]
            ledger = [m for m in self.store.movements if m.sku == sku]
            active = [
                line.quantity
                for r in self.store.reservations.values()
                if r.status is ReservationStatus.ACTIVE
                for line in r.lines
                if line.sku == sku
            ]
            audited.append(
                AuditedSku(
                    sku=sku,
                    on_hand=level.on_hand,
                    reserved=level.reserved,
                    sold=level.sold,
                    ledger_on_hand=sum(m.on_hand_delta for m in ledger),
                    ledger_reserved=sum(m.reserved_delta for m in ledger),
                    ledger_sold=sum(
                        -m.on_hand_delta for m in ledger if m.reason in ("committed", "returned")
                    ),
                    active_reserved=sum(active),
                )
            )
        return audited


class FakeUnitOfWork(InMemoryUnitOfWork):
    """An inventory unit of work over the store (an `AbstractInventoryUnitOfWork`): a clean exit
    keeps the changes, an error puts the store back as it was on entry."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def begin(self) -> None:
        self._before = self.store.snapshot()
        self.stock = FakeStockItems(self.store)
        self.holds = FakeHolds(self.store)
        self.reservations = FakeReservations(self.store)
        self.audit = FakeAudit(self.store)

    def commit(self) -> None:
        self.store.commits += 1

    def roll_back(self) -> None:
        self.store.restore(self._before)
        self.store.rollbacks += 1

    async def publish(
        self, payload: Message, *, aggregate_type: str, aggregate_id: str
    ) -> envelope_pb2.EventEnvelope:
        self.store.events.append(payload)
        return envelope_pb2.EventEnvelope(aggregate_type=aggregate_type, aggregate_id=aggregate_id)

    async def now(self) -> datetime:
        return self.store.clock


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def deps(store: Store) -> InventoryDeps:
    return InventoryDeps(unit_of_work=lambda: FakeUnitOfWork(store))


async def stocked(deps: InventoryDeps, **units: int) -> None:
    for sku, on_hand in units.items():
        await stock.set_stock(SetStock(sku=sku, on_hand=on_hand), deps)


def reserve(order_id: uuid.UUID, *lines: tuple[str, int], ttl: timedelta = TTL) -> ReserveStock:
    return ReserveStock(
        order_id=order_id, lines=tuple(ReservationLine(s, q) for s, q in lines), ttl=ttl
    )


def counts(store: Store, sku: str) -> tuple[int, int, int]:
    level = store.levels[sku]
    return level.on_hand, level.reserved, level.sold


async def assert_ledger_agrees(deps: InventoryDeps) -> None:
    audited = await reservations.audit_stock((), deps)
    assert [(sku.sku, sku.problems) for sku in audited if sku.problems] == []


def event_types(store: Store) -> list[str]:
    return [type(event).__name__ for event in store.events]


# --- stock -------------------------------------------------------------------------------------


async def test_set_stock_records_the_change_as_a_movement(
    deps: InventoryDeps, store: Store
) -> None:
    first = await stock.set_stock(SetStock(sku="A", on_hand=10), deps)
    second = await stock.set_stock(SetStock(sku="A", on_hand=7), deps)

    assert (first.on_hand, second.on_hand, second.available) == (10, 7, 7)
    assert store.movements == [Movement("A", 10, 0, "stock_set"), Movement("A", -3, 0, "stock_set")]
    assert await stock.get_stock("A", deps) == second
    await assert_ledger_agrees(deps)


async def test_set_stock_to_the_same_count_records_no_movement(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5)

    await stock.set_stock(SetStock(sku="A", on_hand=5), deps)

    assert store.movements == [Movement("A", 5, 0, "stock_set")]


async def test_set_stock_below_what_is_reserved_is_refused_and_changes_nothing(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5)
    await reservations.reserve_stock(reserve(uuid.uuid4(), ("A", 4)), deps)
    before = store.snapshot()

    with pytest.raises(FailedPrecondition):
        await stock.set_stock(SetStock(sku="A", on_hand=3), deps)

    assert (store.levels, store.movements) == (before.levels, before.movements)
    assert store.rollbacks == 1


async def test_get_stock_of_a_sku_never_stocked_is_not_found(deps: InventoryDeps) -> None:
    with pytest.raises(NotFound) as refused:
        await stock.get_stock("NEVER", deps)

    assert refused.value.metadata == {"sku": "NEVER"}


# --- reserving ---------------------------------------------------------------------------------


async def test_reserving_holds_every_line_records_it_and_announces_it(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5, B=3)
    order = uuid.uuid4()

    made = await reservations.reserve_stock(reserve(order, ("B", 1), ("A", 2)), deps)

    assert made.status is ReservationStatus.ACTIVE
    assert made.lines == (ReservationLine("A", 2), ReservationLine("B", 1))  # in SKU order
    assert made.expires_at == START + TTL
    assert (counts(store, "A"), counts(store, "B")) == ((5, 2, 0), (3, 1, 0))
    assert store.movements[-2:] == [
        Movement("A", 0, 2, "reserved", order),
        Movement("B", 0, 1, "reserved", order),
    ]
    [event] = store.events
    assert isinstance(event, inventory_events_pb2.InventoryReserved)
    assert event.order_id.value == str(order)
    await assert_ledger_agrees(deps)


async def test_reserving_twice_for_the_same_order_returns_the_same_reservation_once(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5)
    order = uuid.uuid4()

    first = await reservations.reserve_stock(reserve(order, ("A", 2)), deps)
    again = await reservations.reserve_stock(reserve(order, ("A", 2)), deps)

    assert again == first
    assert counts(store, "A") == (5, 2, 0)
    assert event_types(store) == ["InventoryReserved"]
    assert [m.reason for m in store.movements] == ["stock_set", "reserved"]
    await assert_ledger_agrees(deps)


async def test_the_same_lines_in_another_order_are_the_same_request(deps: InventoryDeps) -> None:
    await stocked(deps, A=5, B=5)
    order = uuid.uuid4()

    first = await reservations.reserve_stock(reserve(order, ("A", 1), ("B", 2)), deps)
    again = await reservations.reserve_stock(reserve(order, ("B", 2), ("A", 1)), deps)

    assert again == first


async def test_a_different_request_for_an_order_already_reserved_is_refused(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5)
    order = uuid.uuid4()
    await reservations.reserve_stock(reserve(order, ("A", 2)), deps)

    with pytest.raises(ReservationMismatch):
        await reservations.reserve_stock(reserve(order, ("A", 3)), deps)

    assert counts(store, "A") == (5, 2, 0)


async def test_reserving_more_than_available_is_refused_and_holds_nothing(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5, B=1)
    before = store.snapshot()
    order = uuid.uuid4()

    with pytest.raises(OutOfStock) as refused:
        await reservations.reserve_stock(reserve(order, ("A", 2), ("B", 2)), deps)

    assert refused.value.reason == "OUT_OF_STOCK"
    assert refused.value.metadata == {"skus": "B"}
    assert "B has 1 available" in refused.value.message
    # A's line could be held, but all or none: the whole transaction is gone.
    assert (counts(store, "A"), counts(store, "B")) == ((5, 0, 0), (1, 0, 0))
    assert store.reservations == {}
    assert (store.movements, store.events) == (before.movements, before.events)
    await assert_ledger_agrees(deps)


async def test_after_a_refusal_the_order_can_still_reserve_what_is_there(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=1)
    order = uuid.uuid4()
    with pytest.raises(OutOfStock):
        await reservations.reserve_stock(reserve(order, ("A", 2)), deps)

    made = await reservations.reserve_stock(reserve(order, ("A", 1)), deps)

    assert made.status is ReservationStatus.ACTIVE
    assert counts(store, "A") == (1, 1, 0)


async def test_reserving_unknown_skus_names_them_as_the_request_listed_them(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, B=5)

    with pytest.raises(InvalidArgument) as refused:
        await reservations.reserve_stock(reserve(uuid.uuid4(), ("Z", 1), ("B", 1)), deps)

    assert [v.field for v in refused.value.violations] == ["lines[0].sku"]
    assert counts(store, "B") == (5, 0, 0)
    assert store.reservations == {}


# --- committing --------------------------------------------------------------------------------


async def test_committing_sells_the_units_once_however_often_it_is_repeated(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5)
    order = uuid.uuid4()
    await reservations.reserve_stock(reserve(order, ("A", 2)), deps)

    committed = await reservations.commit_reservation(order, deps)
    again = await reservations.commit_reservation(order, deps)

    assert committed.status is ReservationStatus.COMMITTED
    assert again == committed
    assert counts(store, "A") == (3, 0, 2)
    assert event_types(store) == ["InventoryReserved", "InventoryCommitted"]
    await assert_ledger_agrees(deps)


async def test_committing_an_expired_reservation_is_refused(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5)
    order = uuid.uuid4()
    await reservations.reserve_stock(reserve(order, ("A", 2), ttl=timedelta(seconds=30)), deps)
    store.clock += timedelta(seconds=30)

    with pytest.raises(ReservationClosed) as refused:
        await reservations.commit_reservation(order, deps)

    assert refused.value.metadata["status"] == "EXPIRED"
    assert store.reservations[order].status is ReservationStatus.ACTIVE  # the sweeper's job
    assert counts(store, "A") == (5, 2, 0)


async def test_committing_a_released_reservation_is_refused(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5)
    order = uuid.uuid4()
    await reservations.reserve_stock(reserve(order, ("A", 2)), deps)
    await reservations.release_reservation(
        ReleaseReservation(order_id=order, reason=ReleaseReason.PAYMENT_DECLINED), deps
    )

    with pytest.raises(ReservationClosed):
        await reservations.commit_reservation(order, deps)

    assert counts(store, "A") == (5, 0, 0)


async def test_committing_an_order_without_a_reservation_is_not_found(deps: InventoryDeps) -> None:
    with pytest.raises(NotFound):
        await reservations.commit_reservation(uuid.uuid4(), deps)


# --- releasing ---------------------------------------------------------------------------------


async def test_releasing_twice_gives_the_units_back_once(deps: InventoryDeps, store: Store) -> None:
    await stocked(deps, A=5)
    order = uuid.uuid4()
    await reservations.reserve_stock(reserve(order, ("A", 2)), deps)
    release = ReleaseReservation(order_id=order, reason=ReleaseReason.PAYMENT_DECLINED)

    released = await reservations.release_reservation(release, deps)
    again = await reservations.release_reservation(release, deps)

    assert released.status is ReservationStatus.RELEASED
    assert released.release_reason is ReleaseReason.PAYMENT_DECLINED
    assert again == released
    assert counts(store, "A") == (5, 0, 0)
    assert [m for m in store.movements if m.reason == "released"] == [
        Movement("A", 0, -2, "released", order)
    ]
    assert event_types(store) == ["InventoryReserved", "InventoryReleased"]
    await assert_ledger_agrees(deps)


async def test_releasing_a_committed_reservation_returns_the_sold_units_once(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5)
    order = uuid.uuid4()
    await reservations.reserve_stock(reserve(order, ("A", 2)), deps)
    await reservations.commit_reservation(order, deps)
    release = ReleaseReservation(order_id=order, reason=ReleaseReason.CUSTOMER_CANCELLED)

    returned = await reservations.release_reservation(release, deps)
    again = await reservations.release_reservation(release, deps)

    assert returned.status is ReservationStatus.RETURNED
    assert again == returned
    assert counts(store, "A") == (5, 0, 0)
    assert [m for m in store.movements if m.reason == "returned"] == [
        Movement("A", 2, 0, "returned", order)
    ]
    released_events = [
        e for e in store.events if isinstance(e, inventory_events_pb2.InventoryReleased)
    ]
    assert len(released_events) == 1
    await assert_ledger_agrees(deps)


async def test_a_release_before_the_reservation_refuses_the_late_reservation(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5)
    order = uuid.uuid4()

    mark = await reservations.release_reservation(
        ReleaseReservation(order_id=order, reason=ReleaseReason.TIMEOUT), deps
    )
    with pytest.raises(ReservationClosed):
        await reservations.reserve_stock(reserve(order, ("A", 1)), deps)

    assert (mark.status, mark.lines) == (ReservationStatus.RELEASED, ())
    assert counts(store, "A") == (5, 0, 0)
    assert store.events == []


# --- expiry ------------------------------------------------------------------------------------


async def test_expiry_releases_only_reservations_past_their_time(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=10)
    short, long = uuid.uuid4(), uuid.uuid4()
    await reservations.reserve_stock(reserve(short, ("A", 2), ttl=timedelta(minutes=1)), deps)
    await reservations.reserve_stock(reserve(long, ("A", 3), ttl=timedelta(hours=1)), deps)
    store.clock += timedelta(minutes=5)

    expired = await reservations.expire_reservations(deps)

    assert [r.order_id for r in expired] == [short]
    assert expired[0].release_reason is ReleaseReason.EXPIRED
    assert store.reservations[short].status is ReservationStatus.EXPIRED
    assert store.reservations[long].status is ReservationStatus.ACTIVE
    assert counts(store, "A") == (10, 3, 0)
    assert [m for m in store.movements if m.reason == "expired"] == [
        Movement("A", 0, -2, "expired", short)
    ]
    await assert_ledger_agrees(deps)


async def test_expire_all_due_works_through_every_batch(deps: InventoryDeps, store: Store) -> None:
    await stocked(deps, A=10, B=10)
    orders = [uuid.uuid4() for _ in range(5)]
    for index, order in enumerate(orders):
        line = ("A", 1) if index % 2 else ("B", 2)
        await reservations.reserve_stock(reserve(order, line, ttl=timedelta(seconds=1)), deps)
    store.clock += timedelta(seconds=2)
    commits_before = store.commits

    total = await reservations.expire_all_due(deps, batch=2)

    assert total == 5
    assert store.commits - commits_before == 3  # batches of 2, 2 and 1
    assert {r.status for r in store.reservations.values()} == {ReservationStatus.EXPIRED}
    assert (counts(store, "A"), counts(store, "B")) == ((10, 0, 0), (10, 0, 0))
    await assert_ledger_agrees(deps)


# --- reading -----------------------------------------------------------------------------------


async def test_a_reservation_is_found_by_its_order_and_by_its_id(deps: InventoryDeps) -> None:
    await stocked(deps, A=5)
    order = uuid.uuid4()
    made = await reservations.reserve_stock(reserve(order, ("A", 1)), deps)

    by_order = await reservations.get_reservation(FindReservation(order_id=order), deps)
    by_id = await reservations.get_reservation(
        FindReservation(reservation_id=made.reservation_id), deps
    )

    assert by_order == by_id == made
    with pytest.raises(NotFound):
        await reservations.get_reservation(FindReservation(order_id=uuid.uuid4()), deps)


async def test_the_audit_reports_counts_that_disagree_with_the_ledger(
    deps: InventoryDeps, store: Store
) -> None:
    await stocked(deps, A=5, B=5)
    store.levels["B"] = dataclasses.replace(store.levels["B"], on_hand=4)  # a lost write

    audited = await reservations.audit_stock(("A", "B"), deps)

    assert [(sku.sku, sku.problems) for sku in audited] == [
        ("A", []),
        ("B", ["on_hand 4 but the ledger says 5"]),
    ]
