"""The Region drill's own checks as pure functions over what it recorded and read (the
invariants of verification.invariants are checked beside them): each returns the violations
it found, so tests can feed them broken states.

A purchase is one (customer, idempotency key): whatever Region answered it, however often its
client retried, it may hold or take the customer's money once. The PSP is outside both
Regions, so its intents are the ground truth; an intent names only its order, and an order is
attributed to its purchase by what the clients were answered and by the idempotency records
of both Regions' databases.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from verification.snapshot import Intent

Purchase = tuple[str, str]  # (customer id, idempotency key)
DECLINED = "requires_payment_method"  # a declined intent never held anything


@dataclass(frozen=True, kw_only=True)
class PurchaseRecord:
    """One purchase as its client lived it: the carts it checked out (a second one when its
    first was lost with Region A and the client filled a new one), and the orders each Region
    answered for its key."""

    customer_id: str
    key: str
    carts: tuple[str, ...]
    answered_in_a: frozenset[str]
    answered_in_b: frozenset[str]

    @property
    def purchase(self) -> Purchase:
        """(customer, key)."""
        return (self.customer_id, self.key)


def name(purchase: Purchase) -> str:
    """A purchase as a report names it."""
    return f"customer {purchase[0]} key {purchase[1]}"


def attribution(
    records: Iterable[PurchaseRecord], *stored_keys: Mapping[Purchase, str | None]
) -> dict[str, Purchase]:
    """Each order id known to belong to a purchase: answered to its client, or named by a
    Region's idempotency record of the purchase's key."""
    owner: dict[str, Purchase] = {}
    for record in records:
        for order_id in record.answered_in_a | record.answered_in_b:
            owner[order_id] = record.purchase
    for keys in stored_keys:
        for purchase, stored in keys.items():
            if stored is not None:
                owner.setdefault(stored, purchase)
    return owner


def intents_by_purchase(
    intents: Iterable[Intent], owner: Mapping[str, Purchase]
) -> tuple[dict[Purchase, list[Intent]], list[Intent]]:
    """The intents of each purchase, and those whose order no record attributes."""
    grouped: dict[Purchase, list[Intent]] = defaultdict(list)
    unattributed = []
    for intent in intents:
        purchase = owner.get(intent.order_id or "")
        if purchase is None:
            unattributed.append(intent)
        else:
            grouped[purchase].append(intent)
    return dict(grouped), unattributed


def authorized(intent: Intent) -> bool:
    """Whether the PSP ever authorized the intent (held, captured, or voided after a hold)."""
    return intent.status != DECLINED


def second_authorizations(
    grouped: Mapping[Purchase, Sequence[Intent]], records: Iterable[PurchaseRecord]
) -> tuple[list[str], list[str]]:
    """Purchases the PSP authorized more than once: violations where the client retried its
    one cart under its one key (the retry must replay the first authorization), and, apart,
    those whose client had to fill a new cart (a request of its own, so a new authorization
    is expected there; reconciliation voids the first)."""
    carts = {record.purchase: record.carts for record in records}
    violations, expected = [], []
    for purchase, intents in sorted(grouped.items()):
        ids = sorted(i.intent_id for i in intents if authorized(i))
        if len(ids) < 2:
            continue
        line = f"{name(purchase)} authorized {len(ids)} times at the PSP: {ids}"
        if len(carts.get(purchase, ())) > 1:
            expected.append(f"{line} (its cart was lost and filled again)")
        else:
            violations.append(line)
    return violations, expected


def double_charges(grouped: Mapping[Purchase, Sequence[Intent]]) -> list[str]:
    """Purchases with more than one intent still holding or keeping money."""
    problems = []
    for purchase, intents in sorted(grouped.items()):
        live = sorted(i.intent_id for i in intents if i.live)
        if len(live) > 1:
            problems.append(f"{name(purchase)} is charged by {len(live)} intents: {live}")
    return problems


def orphan_holds(intents: Iterable[Intent], orders_in_b: Iterable[str]) -> list[str]:
    """Intents still authorized (requires_capture) for an order Region B does not have."""
    known = set(orders_in_b)
    return [
        f"intent {i.intent_id} still holds {i.held} for order {i.order_id or '(none)'}, "
        "which Region B does not have"
        for i in intents
        if i.status == "requires_capture" and (i.order_id or "") not in known
    ]


@dataclass(frozen=True)
class AcknowledgedFate:
    """What became of the orders Region A acknowledged: each kept in B, recreated in B by its
    client's retry under the same key (with the same order id, or another), or lost."""

    kept: tuple[str, ...]
    recreated_same_id: tuple[str, ...]
    recreated_other_id: tuple[str, ...]  # "A's id -> B's id"
    lost: tuple[str, ...]  # violations


def acknowledged_fate(
    records: Iterable[PurchaseRecord],
    orders_in_b: Iterable[str],
    keys_in_b: Mapping[Purchase, str | None],
    missing_at_promotion: Iterable[str],
) -> AcknowledgedFate:
    """Every order A acknowledged: in B at the promotion (kept); missing then and in B now
    under its own id (recreated by its key's retry with the same id) or under another order of
    the same purchase; or lost."""
    present, missing = set(orders_in_b), set(missing_at_promotion)
    kept: list[str] = []
    same: list[str] = []
    other: list[str] = []
    lost: list[str] = []
    for record in records:
        in_b = {o for o in record.answered_in_b | {keys_in_b.get(record.purchase) or ""} if o}
        in_b = (in_b & present) - record.answered_in_a
        for order_id in sorted(record.answered_in_a):
            if order_id in present:
                (same if order_id in missing else kept).append(order_id)
            elif in_b:
                other.append(f"{order_id} -> {', '.join(sorted(in_b))}")
            else:
                lost.append(
                    f"order {order_id} of {name(record.purchase)}, acknowledged by Region A, "
                    "is not in Region B and its client's retry placed none"
                )
    return AcknowledgedFate(tuple(kept), tuple(same), tuple(other), tuple(lost))


@dataclass(frozen=True)
class TableMark:
    """One table's rows at a moment: how many, and a digest of all of them."""

    rows: int
    digest: str


def stale_writes(before: Mapping[str, TableMark], after: Mapping[str, TableMark]) -> list[str]:
    """Every table that changed between two marks (or appeared, or went away)."""
    problems = []
    for table in sorted(set(before) | set(after)):
        was, now = before.get(table), after.get(table)
        if was == now:
            continue
        if was is None or now is None:
            problems.append(f"{table} {'appeared' if was is None else 'went away'}")
        elif was.rows != now.rows:
            problems.append(f"{table}: {was.rows} -> {now.rows} rows")
        else:
            problems.append(f"{table}: rows changed in place ({was.rows} rows)")
    return problems


def stale_psp_requests(before: Sequence[str], after: Sequence[str]) -> list[str]:
    """The PSP's request lines logged after `before` (it logs one per request, in order)."""
    return [f"the PSP received {line}" for line in after[len(before) :]]
