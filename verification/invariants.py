"""The architecture's invariants as pure checks over a Snapshot: each one passes, fails with
counterexamples, or says plainly that it was not checked (never a silent pass)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from verification.snapshot import (
    CONFIRMED_STATUSES,
    LIVE_INTENT_STATUSES,
    TERMINAL_STATUSES,
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


def one_order_per_key_and_all_settle(snapshot: Snapshot) -> InvariantResult:
    """1. At most one order per (customer, idempotency key); every order ends settled."""
    problems: list[str] = []
    known = {order.order_id for order in snapshot.orders}
    for checkout in snapshot.client_checkouts:
        who = f"customer {checkout.customer_id} key {checkout.idempotency_key}"
        if len(checkout.order_ids) > 1:
            problems.append(f"{who} was answered {len(checkout.order_ids)} orders: "
                            f"{sorted(checkout.order_ids)}")  # fmt: skip
        problems.extend(
            f"{who} was answered order {order_id}, which checkout does not have"
            for order_id in sorted(checkout.order_ids - known)
        )
    per_cart = Counter(order.cart_id for order in snapshot.orders)
    problems.extend(f"cart {cart} has {n} orders" for cart, n in sorted(per_cart.items()) if n > 1)
    key_of_cart = {c.cart_id: (c.customer_id, c.idempotency_key) for c in snapshot.client_checkouts}
    per_key = Counter(key_of_cart[o.cart_id] for o in snapshot.orders if o.cart_id in key_of_cart)
    problems.extend(
        f"customer {customer} key {key} has {n} orders"
        for (customer, key), n in sorted(per_key.items())
        if n > 1
    )
    problems.extend(
        f"order {order.order_id} still {order.status} after {snapshot.settle_seconds:.0f}s"
        for order in snapshot.orders
        if order.status not in TERMINAL_STATUSES
    )
    problems.extend(
        f"saga execution {name} still RUNNING after {snapshot.settle_seconds:.0f}s"
        for name in snapshot.running_sagas
    )
    examined = (
        f"{len(snapshot.client_checkouts)} keys, {len(snapshot.orders)} orders, "
        f"settled within {snapshot.settle_seconds:.0f}s"
    )
    return _result(1, "one order per idempotency key; every order settles", examined, problems)


def no_double_charge(snapshot: Snapshot) -> InvariantResult:
    """2. Per order, PSP authorized <= total and captured <= authorized; no open orphan."""
    problems: list[str] = []
    orders = {order.order_id: order for order in snapshot.orders}
    by_order: dict[str | None, list[str]] = defaultdict(list)
    authorized: Counter[str | None] = Counter()
    captured: Counter[str | None] = Counter()
    for intent in snapshot.intents:
        if intent.amount_received > intent.amount:
            problems.append(f"intent {intent.intent_id} captured {intent.amount_received} "
                            f"> authorized {intent.amount}")  # fmt: skip
        if intent.amount_refunded > intent.amount_received:
            problems.append(f"intent {intent.intent_id} refunded {intent.amount_refunded} "
                            f"> captured {intent.amount_received}")  # fmt: skip
        if intent.status in LIVE_INTENT_STATUSES:
            by_order[intent.order_id].append(intent.intent_id)
            authorized[intent.order_id] += intent.amount
            captured[intent.order_id] += intent.amount_received - intent.amount_refunded
        if intent.status != "requires_capture":
            continue
        order = orders.get(intent.order_id or "")
        if order is None or order.status not in CONFIRMED_STATUSES:
            state = "unknown to checkout" if order is None else order.status
            problems.append(
                f"intent {intent.intent_id} ({intent.amount}) still authorized for order "
                f"{intent.order_id} ({state}) after reconciliation"
            )
    for order_id, intent_ids in sorted(by_order.items(), key=lambda item: str(item[0])):
        order = orders.get(order_id or "")
        if len(intent_ids) > 1:
            problems.append(f"order {order_id} holds {len(intent_ids)} live intents {intent_ids}")
        if order is not None and authorized[order_id] > order.total_minor:
            problems.append(f"order {order_id} authorized {authorized[order_id]} "
                            f"> total {order.total_minor}")  # fmt: skip
        if order is not None and order.status not in CONFIRMED_STATUSES and captured[order_id]:
            problems.append(f"order {order_id} is {order.status} "
                            f"but {captured[order_id]} stays captured")  # fmt: skip
    if not snapshot.reconciliation_ran:
        problems.append("ReconcilePayments did not run, so open authorizations cannot be judged")
    examined = f"{len(snapshot.intents)} PSP intents against {len(orders)} orders"
    return _result(2, "no double charge (PSP ground truth)", examined, problems)


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


def one_shipping_effect(snapshot: Snapshot) -> InvariantResult:
    """4. Each CONFIRMED order ships once per merchant; no CANCELLED order ships."""
    title = "one shipping effect per confirmed order, none for cancelled"
    if snapshot.shipments is None:
        return InvariantResult(4, title, Verdict.NOT_CHECKED, snapshot.shipments_not_checked)
    problems: list[str] = []
    for order in snapshot.orders:
        parcels = snapshot.shipments.get(order.order_id, 0)
        if order.status in CONFIRMED_STATUSES:
            merchants = len({line.merchant_id for line in order.lines}) or 1
            if parcels != merchants:
                problems.append(f"order {order.order_id} ({order.status}) has {parcels} "
                                f"parcels for {merchants} merchant(s)")  # fmt: skip
        elif parcels:
            problems.append(f"order {order.order_id} ({order.status}) has {parcels} parcels")
    examined = f"{len(snapshot.orders)} orders against {sum(snapshot.shipments.values())} parcels"
    return _result(4, title, examined, problems)


def nothing_dropped(snapshot: Snapshot) -> InvariantResult:
    """5. Every event is published and every message consumed or parked in a DLQ."""
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
    parked = ", ".join(f"{q} {n}" for q, n in sorted(flow.dead_letters.items()) if n) or "none"
    examined = f"{len(flow.unpublished_outbox)} outboxes, {len(flow.queue_depths)} queues; DLQs: "
    return _result(5, title, examined + parked, problems)


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
