"""The chaos report's figure of what each kind of PSP trouble costs in sales: TIMEOUT
cancellations per PSP phase in force when the orders were placed."""

from __future__ import annotations

from verification.faults import AppliedPhase
from verification.report import figures_table, timeouts_by_phase
from verification.snapshot import Order, OrderLine, Snapshot


def order(index: int, reason: str | None) -> Order:
    return Order(
        order_id=f"o-{index}",
        customer_id=f"chaos-7a-001122-c{index:05d}",
        cart_id=f"cart-{index}",
        status="CANCELLED" if reason else "SHIPPED",
        failure_reason=reason,
        total_minor=100,
        lines=(OrderLine(sku="MUG", merchant_id="m-1", quantity=1),),
    )


def test_timeouts_are_counted_against_the_phase_their_orders_were_placed_in() -> None:
    # 10 checkouts: 0-3 before any fault, 4-6 under degradation, 7-9 under an outage.
    orders = [order(i, None) for i in range(4)]
    orders += [order(4, "TIMEOUT"), order(5, None), order(6, "PAYMENT_DECLINED")]
    orders += [order(7, "TIMEOUT"), order(8, "TIMEOUT"), order(9, None)]
    snapshot = Snapshot(
        orders=tuple(orders),
        client_checkouts=(),
        initial_stock={},
        stock=(),
        audit_discrepancies=(),
        intents=(),
        settle_seconds=0.0,
    )
    phases = [
        AppliedPhase(share=0.4, faults={"error_rate": 0.1}),
        AppliedPhase(share=0.7, faults={"outage_seconds": 40.0}, why="outage"),
    ]

    rows = timeouts_by_phase(snapshot, phases, checkouts=10)

    assert rows == [
        ("no PSP faults yet", 0, 4),
        ("{'error_rate': 0.1}", 1, 3),
        ("{'outage_seconds': 40.0} (outage)", 2, 3),
    ]


def test_the_figures_table_aligns_its_values_in_one_column() -> None:
    lines = figures_table([("load / settle", "12.0 s / 3.0 s"), ("SIGKILLs / skipped", "3 / 0")])

    assert lines == [
        "figures:",
        "  load / settle       12.0 s / 3.0 s",
        "  SIGKILLs / skipped  3 / 0",
    ]
