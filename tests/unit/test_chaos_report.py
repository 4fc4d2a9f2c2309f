"""The chaos report's figure of what each kind of PSP trouble costs in sales: TIMEOUT
cancellations per PSP phase in force when the orders were placed."""

from __future__ import annotations

from verification.customers import Traffic
from verification.faults import AppliedPhase, FaultLog
from verification.report import RunFacts, figures_table, render, timeouts_by_phase
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


def test_the_report_ends_with_its_figures_and_the_customers_rate() -> None:
    snapshot = Snapshot(
        orders=(order(0, None), order(1, "TIMEOUT")),
        client_checkouts=(),
        initial_stock={},
        stock=(),
        audit_discrepancies=(),
        intents=(),
    )
    facts = RunFacts(seed=7, replay="replay", checkouts=2, load_seconds=60.0, settle_seconds=5.0,
                     restarts_seen=0, orphans_voided=0, data_dir="/tmp/x")  # fmt: skip
    faults = FaultLog(load_samples=[(1.0, 1), (4.0, 2)])

    lines = render(facts, snapshot, Traffic(), faults, []).splitlines()

    table = lines[lines.index("figures:") + 1 : -2]
    assert "  checkouts per second, to the last answer  0.5 (2 in 4.0 s)" in table
    assert "  load (until the faults end) / settle      60.0 s / 5.0 s" in table
    assert lines[-1].startswith("result: PASS")
