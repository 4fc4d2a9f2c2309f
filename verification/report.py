"""The run's report: orders and outcomes, client traffic, faults injected, each invariant."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from verification.customers import Traffic
from verification.faults import AppliedPhase, FaultLog, count_by_target
from verification.invariants import InvariantResult, Verdict, violations
from verification.snapshot import Snapshot

SHOWN_COUNTEREXAMPLES = 20


@dataclass(frozen=True, kw_only=True)
class RunFacts:
    """The figures of one run that are not in the snapshot."""

    seed: int
    replay: str
    checkouts: int
    load_seconds: float
    settle_seconds: float
    restarts_seen: int
    orphans_voided: int
    data_dir: str
    phases_left_out: tuple[str, ...] = ()


def outcomes(snapshot: Snapshot) -> Counter[str]:
    """Orders by final status (and reason for CANCELLED)."""
    return Counter(
        f"{o.status} {o.failure_reason}" if o.failure_reason else o.status for o in snapshot.orders
    )


def _phase_line(phase: AppliedPhase) -> str:
    lasts = f" for {phase.lasts_seconds:.0f}s" if phase.lasts_seconds else ""
    why = f" ({phase.why})" if phase.why else ""
    return f"  PSP at {phase.share:4.0%}: {phase.faults or 'no faults'}{lasts}{why}"


def _cancel_lines(snapshot: Snapshot) -> list[str]:
    """Customer cancels by outcome, and the order status each was answered."""
    if not snapshot.cancels:
        return ["  customer cancels: none"]
    counts = Counter(f"{c.outcome} ({c.answered_status or 'no answer'})" for c in snapshot.cancels)
    shown = ", ".join(f"{label} x{n}" for label, n in sorted(counts.items()))
    return [f"  customer cancels: {len(snapshot.cancels)}: {shown}"]


def _index_of(customer_id: str) -> int | None:
    """The plan index in a chaos customer id (`chaos-<run>-c00042` -> 42)."""
    _, _, tail = customer_id.rpartition("-c")
    return int(tail) if tail.isdigit() else None


def timeouts_by_phase(
    snapshot: Snapshot, phases: Sequence[AppliedPhase], checkouts: int
) -> list[tuple[str, int, int]]:
    """(the PSP phase in force when the orders were placed, TIMEOUT cancellations, orders),
    in phase order: what a kind of PSP trouble costs in sales. An order's moment is its place
    in the plan, as a share of the load."""
    labels = ["no PSP faults yet"] + [
        f"{phase.faults or 'no faults'}" + (f" ({phase.why})" if phase.why else "")
        for phase in phases
    ]
    starts = [phase.share for phase in phases]
    placed: Counter[int] = Counter()
    timed_out: Counter[int] = Counter()
    for order in snapshot.orders:
        index = _index_of(order.customer_id)
        if index is None:
            continue
        share = index / max(checkouts, 1)
        bucket = sum(1 for start in starts if start <= share)  # 0: before the first phase
        placed[bucket] += 1
        timed_out[bucket] += order.failure_reason == "TIMEOUT"
    return [(labels[b], timed_out[b], placed[b]) for b in sorted(placed)]


def _timeout_lines(facts: RunFacts, snapshot: Snapshot, faults: FaultLog) -> list[str]:
    rows = timeouts_by_phase(snapshot, faults.psp_phases, facts.checkouts)
    out = ["timeout cancellations by the PSP phase in force when the order was placed:"]
    out += [
        f"  {timed:5d} of {placed:5d} ({timed / placed:6.1%})  {label}"
        for label, timed, placed in rows
        if placed
    ]
    return out


def figures_table(rows: Sequence[tuple[str, str]]) -> list[str]:
    """`figures:` and one aligned `label  value` line per row: the one table style of the
    chaos run's and the drills' reports."""
    width = max((len(label) for label, _ in rows), default=0)
    return ["figures:", *(f"  {label:<{width}}  {value}" for label, value in rows)]


def _figure_rows(facts: RunFacts, snapshot: Snapshot, faults: FaultLog) -> list[tuple[str, str]]:
    # The load lasts until the last fault phase ends; the customers' rate is up to their last
    # answer (the progress line's last sample).
    seconds, done = faults.load_samples[-1] if faults.load_samples else (0.0, 0)
    rate = f"{done / seconds:.1f} ({done} in {seconds:.1f} s)" if seconds > 0 else "-"
    return [
        ("checkouts planned / orders stored", f"{facts.checkouts} / {len(snapshot.orders)}"),
        (
            "load (until the faults end) / settle",
            f"{facts.load_seconds:.1f} s / {facts.settle_seconds:.1f} s",
        ),
        ("checkouts per second, to the last answer", rate),
        ("SIGKILLs / skipped", f"{len(faults.kills)} / {len(faults.skipped_kills)}"),
        ("PSP phases / Redis restarts", f"{len(faults.psp_phases)} / {len(faults.redis_restarts)}"),
    ]


def render(
    facts: RunFacts,
    snapshot: Snapshot,
    traffic: Traffic,
    faults: FaultLog,
    results: Sequence[InvariantResult],
) -> str:
    """The human-readable report."""
    out = [
        f"chaos run, seed {facts.seed}  (replay: {facts.replay})",
        f"data and logs: {facts.data_dir}",
        "",
        f"orders: {facts.checkouts} checkouts planned, {len(snapshot.orders)} orders in "
        f"{facts.load_seconds:.0f}s of load, settled in {facts.settle_seconds:.0f}s",
    ]
    out += [f"  {n:6d}  {label}" for label, n in sorted(outcomes(snapshot).items())]
    out += _timeout_lines(facts, snapshot, faults)
    answers = ", ".join(f"{k} x{n}" for k, n in sorted(traffic.answers.items()))
    out += [f"client answers: {answers}", f"client gave up: {len(traffic.abandoned)}"]
    out += [f"  {line}" for line in traffic.abandoned[:5]]
    kills = ", ".join(f"{name} {n}" for name, n in sorted(count_by_target(faults).items()))
    out += [
        "",
        f"faults: {len(faults.kills)} SIGKILLs ({kills}); supervisor restarts seen "
        f"{facts.restarts_seen}; Redis restarts {len(faults.redis_restarts)}",
    ]
    out += [f"  kill skipped: {why}" for why in faults.skipped_kills]
    out += [_phase_line(phase) for phase in faults.psp_phases]
    out += [f"  PSP phase left out: {why}" for why in facts.phases_left_out]
    out += [f"  poison message {p.message_id} put on {p.queue}" for p in faults.poison]
    out += _cancel_lines(snapshot)
    released = len(snapshot.released_by_reconciliation)
    out += [
        f"  the harness's ReconcilePayments voided {facts.orphans_voided} orphan "
        f"authorization(s); holds it alone released: {released}",
        "",
    ]
    out += invariant_lines(results)
    out += ["", *figures_table(_figure_rows(facts, snapshot, faults))]
    out += ["", f"result: {verdict(results)} (seed {facts.seed})"]
    return "\n".join(out)


def invariant_lines(results: Sequence[InvariantResult]) -> list[str]:
    """Each invariant's verdict, what it examined, and its first counterexamples."""
    out = ["invariants:"]
    for result in results:
        out.append(f"  [{result.verdict.value}] {result.number}. {result.title}: {result.examined}")
        out += [f"      - {c}" for c in result.counterexamples[:SHOWN_COUNTEREXAMPLES]]
        hidden = len(result.counterexamples) - SHOWN_COUNTEREXAMPLES
        if hidden > 0:
            out.append(f"      ... and {hidden} more")
    return out


def verdict(results: Sequence[InvariantResult]) -> str:
    """PASS, or FAIL with how many violations in how many invariants."""
    failed = [r for r in results if r.verdict is Verdict.FAIL]
    if failed:
        return f"FAIL: {violations(results)} violation(s) in {len(failed)} invariant(s)"
    return "PASS: zero invariant violations"
