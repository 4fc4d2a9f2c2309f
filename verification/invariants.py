"""The architecture's invariants as pure checks over a Snapshot: each one passes, fails with
counterexamples, or says plainly that it was not checked (never a silent pass)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from verification.snapshot import (
    CANCEL_ACCEPTED,
    CANCEL_GAVE_UP,
    CANCEL_REFUSED,
    CONFIRMED_STATUSES,
    TERMINAL_STATUSES,
    CarrierBooking,
    Intent,
    Order,
    Snapshot,
)


class Verdict(StrEnum):
    """The outcome of one invariant."""

    PASS = "PASS"
    FAIL = "FAIL"
    NOT_CHECKED = "NOT CHECKED"


@dataclass(frozen=True)
class InvariantResult:
    """One invariant's verdict, what was examined, and every counterexample found."""

    number: int
    title: str
    verdict: Verdict
    examined: str
    counterexamples: tuple[str, ...] = ()


def _result(number: int, title: str, examined: str, problems: Sequence[str]) -> InvariantResult:
    verdict = Verdict.FAIL if problems else Verdict.PASS
    return InvariantResult(number, title, verdict, examined, tuple(problems))


# -- 1. one order per key, every order settles as its customer was answered -------------------


def _answered_orders(snapshot: Snapshot) -> list[str]:
    """What the clients were answered, against what checkout has and stored per key."""
    problems: list[str] = []
    known = {order.order_id for order in snapshot.orders}
    stored = {(k.customer_id, k.key): k for k in snapshot.stored_keys}
    for checkout in snapshot.client_checkouts:
        who = f"customer {checkout.customer_id} key {checkout.idempotency_key}"
        if len(checkout.order_ids) > 1:
            problems.append(f"{who} was answered {len(checkout.order_ids)} orders: "
                            f"{sorted(checkout.order_ids)}")  # fmt: skip
        problems.extend(
            f"{who} was answered order {order_id}, which checkout does not have"
            for order_id in sorted(checkout.order_ids - known)
        )
        if not checkout.order_ids:
            continue
        record = stored.get((checkout.customer_id, checkout.idempotency_key))
        if record is None or record.state != "COMPLETED":
            state = "no record" if record is None else f"a {record.state} record"
            problems.append(f"{who} was answered an order but checkout keeps {state} of the key")
        elif record.order_id not in checkout.order_ids:
            problems.append(f"{who} was answered {sorted(checkout.order_ids)} but checkout "
                            f"replays order {record.order_id}")  # fmt: skip
    return problems


def _orders_per_key(snapshot: Snapshot) -> list[str]:
    """Orders checkout stored per customer against the keys that customer ever sent."""
    keys_sent: dict[str, set[str]] = defaultdict(set)
    for checkout in snapshot.client_checkouts:
        keys_sent[checkout.customer_id].add(checkout.idempotency_key)
    per_customer = Counter(order.customer_id for order in snapshot.orders)
    problems = [
        f"customer {customer} sent {len(keys_sent[customer])} key(s) "
        f"{sorted(keys_sent[customer])} but checkout has {n} orders for them"
        for customer, n in sorted(per_customer.items())
        if customer in keys_sent and n > len(keys_sent[customer])
    ]
    per_cart = Counter(order.cart_id for order in snapshot.orders)
    problems.extend(f"cart {cart} has {n} orders" for cart, n in sorted(per_cart.items()) if n > 1)
    return problems


def _unsettled(snapshot: Snapshot) -> list[str]:
    after = f"after {snapshot.settle_seconds:.0f}s"
    problems = [
        f"order {order.order_id} still {order.status} {after}"
        for order in snapshot.orders
        if order.status not in TERMINAL_STATUSES
    ]
    problems.extend(
        f"saga execution {name} still RUNNING {after}" for name in snapshot.running_sagas
    )
    return problems


def _cancels_kept(snapshot: Snapshot) -> list[str]:
    """An accepted cancel ends CANCELLED; a refused one (the order shipped) ends SHIPPED."""
    orders = {order.order_id: order for order in snapshot.orders}
    expected = {CANCEL_ACCEPTED: "CANCELLED", CANCEL_REFUSED: "SHIPPED"}
    problems = []
    for cancel in snapshot.cancels:
        order = orders.get(cancel.order_id)
        want = expected.get(cancel.outcome)
        if want is None or order is None or order.status == want:
            continue
        answered = cancel.answers[-1] if cancel.answers else cancel.outcome
        problems.append(f"order {cancel.order_id}: the customer's cancel was {cancel.outcome} "
                        f"({answered}) but the order ended {order.status}")  # fmt: skip
    return problems


def one_order_per_key_and_all_settle(snapshot: Snapshot) -> InvariantResult:
    """1. One order per (customer, idempotency key); every order settles as it was answered."""
    problems = [
        *_answered_orders(snapshot),
        *_orders_per_key(snapshot),
        *_unsettled(snapshot),
        *_cancels_kept(snapshot),
    ]
    outcomes = Counter(cancel.outcome for cancel in snapshot.cancels)
    examined = (
        f"{len(snapshot.client_checkouts)} keys ({len(snapshot.stored_keys)} stored by "
        f"checkout), {len(snapshot.orders)} orders, settled within "
        f"{snapshot.settle_seconds:.0f}s; {len(snapshot.cancels)} customer cancels "
        f"({outcomes[CANCEL_ACCEPTED]} accepted, {outcomes[CANCEL_REFUSED]} refused as shipped, "
        f"{outcomes[CANCEL_GAVE_UP]} gave up)"
    )
    title = "one order per idempotency key; every order settles as answered"
    return _result(1, title, examined, problems)


# -- 2. no double charge: the PSP's own records, before the harness reconciles ----------------


def _intent_sanity(intent: Intent) -> list[str]:
    problems = []
    if intent.amount_received > intent.amount:
        problems.append(f"intent {intent.intent_id} captured {intent.amount_received} "
                        f"> authorized {intent.amount}")  # fmt: skip
    if intent.amount_refunded > intent.amount_received:
        problems.append(f"intent {intent.intent_id} refunded {intent.amount_refunded} "
                        f"> captured {intent.amount_received}")  # fmt: skip
    return problems


def _money_of_order(order: Order, intents: Sequence[Intent]) -> list[str]:
    """What one order's intents hold and keep, against what its status allows."""
    name = f"order {order.order_id} ({order.status}, total {order.total_minor})"
    live = [i.intent_id for i in intents if i.live]
    held = sum(i.held for i in intents)
    captured = sum(i.amount_received for i in intents)
    refunded = sum(i.amount_refunded for i in intents)
    kept = captured - refunded
    authorized = sum(i.amount for i in intents if i.live)
    problems = []
    if len(live) > 1:
        problems.append(f"{name} has {len(live)} live intents {live}")
    if authorized > order.total_minor:
        problems.append(f"{name} authorized {authorized} > its total")
    if order.status == "SHIPPED":
        if captured != order.total_minor or refunded:
            problems.append(f"{name} captured {captured} and refunded {refunded}: a shipped "
                            "order is charged exactly its total")  # fmt: skip
        if held:
            problems.append(f"{name} still holds {held} authorized beside its capture")
    elif order.status == "CONFIRMED" and held + kept != order.total_minor:
        problems.append(f"{name} holds {held} and keeps {kept}: a confirmed order is "
                        "backed by exactly its total")  # fmt: skip
    elif order.status == "CANCELLED":
        if held:
            problems.append(f"{name} still holds {held} authorized and not voided")
        if kept:
            problems.append(f"{name} keeps {kept} captured and not refunded")
    return problems


def no_double_charge(snapshot: Snapshot) -> InvariantResult:
    """2. Per order, the PSP holds and keeps exactly what its status allows, once."""
    orders = {order.order_id: order for order in snapshot.orders}
    by_order: dict[str, list[Intent]] = defaultdict(list)
    problems: list[str] = []
    for intent in snapshot.intents:
        problems.extend(_intent_sanity(intent))
        order_id = intent.order_id or ""
        if order_id in orders:
            by_order[order_id].append(intent)
        elif intent.live:
            problems.append(f"intent {intent.intent_id} holds {intent.held} and keeps "
                            f"{intent.kept} for order {intent.order_id or '(none)'}, "
                            "unknown to checkout")  # fmt: skip
    for order_id, order in sorted(orders.items()):
        problems.extend(_money_of_order(order, by_order.get(order_id, [])))
    released = snapshot.released_by_reconciliation
    examined = (
        f"{len(snapshot.intents)} PSP intents against {len(orders)} orders, as listed before "
        f"the harness's ReconcilePayments; holds only that reconciliation released: "
        f"{len(released)}" + (f" {list(released[:5])}" if released else "")
    )
    return _result(2, "no double charge; nothing held or kept wrongly (PSP ground truth)",
                   examined, problems)  # fmt: skip


# -- 3. no oversell -----------------------------------------------------------------------------


def no_oversell(snapshot: Snapshot) -> InvariantResult:
    """3. Per SKU, sold + reserved + available == initial stock; nothing negative."""
    problems: list[str] = []
    levels = {level.sku: level for level in snapshot.stock}
    sold_to_orders: Counter[str] = Counter()
    for order in snapshot.orders:
        if order.status in CONFIRMED_STATUSES:
            for line in order.lines:
                sold_to_orders[line.sku] += line.quantity
    settled = all(order.status in TERMINAL_STATUSES for order in snapshot.orders)
    for sku, initial in sorted(snapshot.initial_stock.items()):
        level = levels.get(sku)
        if level is None:
            problems.append(f"{sku}: no stock row (initial {initial})")
            continue
        counts = f"sold {level.sold} + reserved {level.reserved} + available {level.available}"
        if level.sold + level.reserved + level.available != initial:
            problems.append(f"{sku}: {counts} != initial {initial}")
        if min(level.on_hand, level.reserved, level.sold, level.available) < 0:
            problems.append(f"{sku}: a negative count ({counts}, on hand {level.on_hand})")
        if level.sold != sold_to_orders[sku]:
            problems.append(
                f"{sku}: sold {level.sold} != {sold_to_orders[sku]} units in confirmed orders"
            )
        if settled and level.reserved:
            problems.append(f"{sku}: {level.reserved} units still reserved with no open order")
    problems.extend(f"AuditStock: {found}" for found in snapshot.audit_discrepancies)
    examined = f"{len(snapshot.initial_stock)} SKUs, AuditStock over the ledger"
    return _result(3, "no oversell; stock conserved", examined, problems)


# -- 4. one shipping effect: the carrier's own bookings ----------------------------------------


def _bookings_of_order(order: Order, bookings: Sequence[CarrierBooking]) -> list[str]:
    name = f"order {order.order_id} ({order.status})"
    live = Counter(b.merchant_id for b in bookings if not b.called_back)
    merchants = {line.merchant_id for line in order.lines}
    if order.status not in CONFIRMED_STATUSES:
        n = sum(live.values())
        return [f"{name} has {n} live booking(s) at the carrier"] if n else []
    problems = [
        f"{name} has {live[merchant]} live booking(s) at the carrier for merchant {merchant}"
        for merchant in sorted(merchants)
        if live[merchant] != 1
    ]
    problems.extend(
        f"{name} has a booking for merchant {merchant}, which sells nothing in it"
        for merchant in sorted(set(live) - merchants)
    )
    return problems


def one_shipping_effect(snapshot: Snapshot) -> InvariantResult:
    """4. Each confirmed order has one live parcel per merchant at the carrier; cancelled none."""
    title = "one shipping effect per confirmed order, none for cancelled (carrier's bookings)"
    if snapshot.bookings is None:
        return InvariantResult(4, title, Verdict.NOT_CHECKED, snapshot.bookings_not_checked)
    orders = {order.order_id: order for order in snapshot.orders}
    by_order: dict[str, list[CarrierBooking]] = defaultdict(list)
    for booking in snapshot.bookings:
        by_order[booking.order_id].append(booking)
    problems = [
        f"booking {b.shipment_id} for order {b.order_id}, unknown to checkout"
        for b in snapshot.bookings
        if b.order_id not in orders and not b.called_back
    ]
    for order_id, order in sorted(orders.items()):
        problems.extend(_bookings_of_order(order, by_order.get(order_id, [])))
    called_back = sum(b.called_back for b in snapshot.bookings)
    examined = (
        f"{len(orders)} orders against {len(snapshot.bookings)} bookings at the carrier "
        f"({called_back} called back)"
    )
    return _result(4, title, examined, problems)


# -- 5. nothing silently dropped -----------------------------------------------------------------


def _dead_letters(snapshot: Snapshot) -> Iterable[str]:
    assert snapshot.message_flow is not None
    injected = {poison.message_id for poison in snapshot.injected_poison}
    left = {message.message_id for message in snapshot.message_flow.messages}
    for message in snapshot.message_flow.dead_letters:
        if message.message_id not in injected:
            what = f" ({message.describes})" if message.describes else ""
            yield f"{message.queue}: message {message.message_id}{what} parked, not injected"
    for poison in snapshot.injected_poison:
        if poison.message_id not in left:
            yield (f"poison message {poison.message_id} put on {poison.queue} vanished: "
                   "neither handled (it cannot be) nor parked in a DLQ")  # fmt: skip


def nothing_dropped(snapshot: Snapshot) -> InvariantResult:
    """5. Every event is published and consumed; a DLQ holds only the run's own poison."""
    title = "nothing silently dropped"
    flow = snapshot.message_flow
    if flow is None:
        return InvariantResult(5, title, Verdict.NOT_CHECKED, snapshot.message_flow_not_checked)
    problems = [
        f"outbox {schema}: {n} events never published"
        for schema, n in sorted(flow.unpublished_outbox.items())
        if n
    ]
    problems.extend(
        f"queue {queue}: {n} messages never consumed"
        for queue, n in sorted(flow.queue_depths.items())
        if n
    )
    problems.extend(_dead_letters(snapshot))
    parked = Counter(message.queue for message in flow.dead_letters)
    shown = ", ".join(f"{q} {n}" for q, n in sorted(parked.items())) or "none"
    examined = (
        f"{len(flow.unpublished_outbox)} outboxes, {len(flow.queue_depths)} queues, "
        f"{len(flow.dead_letter_queues)} DLQs holding: {shown}; "
        f"{len(snapshot.injected_poison)} poison message(s) injected"
    )
    return _result(5, title, examined, problems)


CHECKS: tuple[Callable[[Snapshot], InvariantResult], ...] = (
    one_order_per_key_and_all_settle,
    no_double_charge,
    no_oversell,
    one_shipping_effect,
    nothing_dropped,
)


def check_all(snapshot: Snapshot) -> list[InvariantResult]:
    """Every invariant's result, in the architecture's order."""
    return [check(snapshot) for check in CHECKS]


def violations(results: Sequence[InvariantResult]) -> int:
    """How many counterexamples the failed invariants hold."""
    return sum(len(r.counterexamples) for r in results if r.verdict is Verdict.FAIL)
