"""Checkouts through the HTTP gateway on the real multi-process stack, at rising concurrency.

Starts `python -m local_supervisor` on a fresh database (DATABASE_URL's server, else an embedded
PostgreSQL), stocks a catalog, and for each number of stored orders (synthetic CONFIRMED orders
written straight into checkout's tables) runs closed-loop steps at rising concurrency and then
an open-loop step at 80% of the peak confirmed rate; before the first ramp, a few checkouts one
at a time measure the unloaded time to CONFIRMED. Carts are filled before each timed step, so
a step measures checkouts only. Per step it reports accepted and confirmed checkouts per second,
p50/p95/p99 of the accept latency (POST /v1/checkouts -> 202) and of the time to CONFIRMED (sent
-> the time of the OrderPlaced outbox row ConfirmOrder writes, read once every order settled),
and CPU per checkout of each of the stack's processes and PostgreSQL. The machine's baselines
are measured in the same run: pgbench -N on the same server and a bare grpc.aio unary ping. It
reports against the issue's targets and never asserts a speed. The run ends by auditing the
money and stock of every order it placed (bench.checkout_audit) and exits 1 on any mismatch.
`make bench` runs it; `--help` for the knobs.
"""

from __future__ import annotations

import argparse
import json
import operator
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench.checkout_audit import AuditReport, audit_run, print_audit
from bench.checkout_baselines import Baseline, grpc_echo_calls, pgbench_simple_update
from bench.checkout_data import store_orders
from bench.checkout_stack import postmaster_pid, running_stack, sample_cpu, stack_seconds
from bench.checkout_traffic import (
    ON_HAND,
    Attempt,
    Outcome,
    Window,
    closed_loop,
    http_session,
    open_loop,
    pipeline_drained,
    prepare_checkouts,
    settled_outcomes,
    stock_catalog,
)
from bench.inventory_reservations import BenchSettings, fresh_database, postgres_server
from local_supervisor.launcher import LaunchedStack
from verification.progress import ProgressLine
from verification.snapshot import ClientCheckout

# Issue 15's targets (goals to report against, not gates), on a 2-core machine: (target, aim).
TARGET_CONFIRMED_PER_SECOND = (60.0, 100.0)
TARGET_PGBENCH_RATIO = 0.01
TARGET_CPU_MS_PER_CHECKOUT = (30.0, 20.0)  # every stack process plus PostgreSQL
TARGET_UNLOADED_CONFIRMED_P50_MS = 50.0
TARGET_ACCEPT_P99_MS = 50.0  # at 80% of the peak
TARGET_CONFIRMED_P99_MS = 250.0  # at 80% of the peak
TARGET_STORED_DRIFT = 0.10
EXIT_AUDIT_FAILED = 1
CARD = "pm_card_visa"
CONFIRMED_OR_LATER = ("CONFIRMED", "SHIPPED")
WARMUP_CHECKOUTS = 40


@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    """What to run: the concurrency ramp, the data sizes, the baselines' lengths, the outputs."""

    concurrency: tuple[int, ...]
    checkouts: int
    unloaded_checkouts: int
    stored: tuple[int, ...]
    skus: int
    peak_fraction: float
    pgbench_seconds: int
    pgbench_scale: int
    ping_seconds: float
    stack_env: dict[str, str]
    json_path: Path | None
    plot_path: Path | None


def _numbers(text: str) -> tuple[int, ...]:
    values = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"a comma-separated list of counts, not {text!r}")
    return values


def parse_plan(argv: Sequence[str] | None = None) -> LoadPlan:
    """The plan from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=_numbers, default=(4, 8, 16, 32),
                        help="closed-loop clients per step, comma-separated")  # fmt: skip
    parser.add_argument("--checkouts", type=int, default=300, help="checkouts per step")
    parser.add_argument("--unloaded-checkouts", type=int, default=20,
                        help="checkouts one at a time: the unloaded time to CONFIRMED")  # fmt: skip
    parser.add_argument("--stored", type=_numbers, default=(0, 10_000, 1_000_000),
                        help="stored orders before each ramp, comma-separated, rising")  # fmt: skip
    parser.add_argument("--skus", type=int, default=100, help="products the carts pick from")
    parser.add_argument("--peak-fraction", type=float, default=0.8,
                        help="open-loop step at this fraction of the peak confirmed/s")  # fmt: skip
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--pgbench-scale", type=int, default=10)
    parser.add_argument("--ping-seconds", type=float, default=5.0)
    parser.add_argument("--stack-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra settings for the stack's processes")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--plot", type=Path, default=None, help="write the PNG plot here")
    args = parser.parse_args(argv)
    if min(args.checkouts, args.unloaded_checkouts) < 2 or args.skus < 1:
        parser.error("checkouts >= 2, unloaded-checkouts >= 2, skus >= 1")
    if not 0 < args.peak_fraction <= 1:
        parser.error("0 < peak-fraction <= 1")
    if list(args.stored) != sorted(args.stored) or 0 in args.concurrency:
        parser.error("--stored must rise and concurrency be >= 1")
    if any("=" not in pair for pair in args.stack_env):
        parser.error("--stack-env takes NAME=VALUE")
    return LoadPlan(
        concurrency=args.concurrency,
        checkouts=args.checkouts,
        unloaded_checkouts=args.unloaded_checkouts,
        stored=args.stored,
        skus=args.skus,
        peak_fraction=args.peak_fraction,
        pgbench_seconds=args.pgbench_seconds,
        pgbench_scale=args.pgbench_scale,
        ping_seconds=args.ping_seconds,
        stack_env=dict(pair.split("=", 1) for pair in args.stack_env),
        json_path=args.json,
        plot_path=args.plot,
    )


def stack_settings(plan: LoadPlan) -> dict[str, str]:
    """The stack's settings for load: the per-customer throttle out of the way and tracing off
    (the supervisor turns it on for `make run`; `--stack-env OTEL_TRACES_EXPORTER=jsonl` measures
    it), then overrides."""
    return {
        "GATEWAY_RATE_PER_SECOND": "100000",
        "GATEWAY_BURST": "100000",
        "OTEL_TRACES_EXPORTER": "none",
        **plan.stack_env,
    }


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 in milliseconds (None without enough values)."""
    if len(values) < 2:
        return {"p50": None, "p95": None, "p99": None}
    cuts = statistics.quantiles([v * 1000 for v in values], n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1)}


def summarise(
    window: Window,
    outcomes: Sequence[Outcome],
    cpu: dict[str, float],
    *,
    stored: int,
    mode: str,
    concurrency: int | None,
    offered_rate: float | None,
) -> dict[str, Any]:
    """One step's figures from its attempts, the orders' outcomes and the CPU spent."""
    accepted = [a for a in window.attempts if a.status == 202 and a.order_id]
    sent_at = {a.order_id: a.sent_at for a in accepted}
    # SHIPPED orders were CONFIRMED first (the shipping consumer may be that quick).
    confirmed = [o for o in outcomes if o.status in CONFIRMED_OR_LATER]
    last_confirmed = max((o.settled_at for o in confirmed), default=window.ended_at)
    stack_cpu = stack_seconds(cpu)
    per_checkout = max(len(confirmed), 1)
    return {
        "stored_orders": stored,
        "mode": mode,
        "concurrency": concurrency,
        "offered_per_second": offered_rate,
        "sent": len(window.attempts),
        "answers": dict(Counter(str(a.status) for a in window.attempts)),
        "accepted": len(accepted),
        "confirmed": len(confirmed),
        "not_confirmed": dict(
            Counter(
                f"{o.status}:{o.failure_reason}"
                for o in outcomes
                if o.status not in CONFIRMED_OR_LATER
            )
        ),
        "accepted_per_second": round(len(accepted) / (window.ended_at - window.started_at), 1),
        "confirmed_per_second": round(len(confirmed) / (last_confirmed - window.started_at), 1),
        "accept_ms": percentiles([a.seconds for a in accepted]),
        "confirmed_ms": percentiles([o.settled_at - sent_at[o.order_id] for o in confirmed]),
        "cpu_seconds": cpu,
        "cpu_seconds_per_checkout": round(stack_cpu / per_checkout, 4),
        # Each process's share (the load generator's apart, not in the total above).
        "cpu_ms_per_checkout": {
            name: round(seconds * 1000 / per_checkout, 2) for name, seconds in cpu.items()
        },
    }


def client_checkouts(attempts: Sequence[Attempt]) -> list[ClientCheckout]:
    """What each customer of a step was answered, as the audit compares it with checkout's."""
    return [
        ClientCheckout(
            customer_id=a.request.customer_id,
            idempotency_key=a.request.idempotency_key,
            cart_id=a.request.cart_id,
            order_ids=frozenset({a.order_id} if a.order_id else ()),
        )
        for a in attempts
    ]


@dataclass(frozen=True, kw_only=True)
class TimedStep:
    """One timed step as measured: its attempts, the orders' outcomes, the CPU spent."""

    window: Window
    outcomes: list[Outcome]
    cpu: dict[str, float]


async def time_step(
    stack: LaunchedStack,
    database_url: str,
    skus: Sequence[str],
    placed: list[ClientCheckout],
    *,
    label: str,
    checkouts: int,
    connections: int,
    concurrency: int | None = None,
    rate: float | None = None,
    other_databases: Collection[str] = (),
) -> TimedStep:
    """Fill carts, then time their checkouts (closed loop at `concurrency`, or open loop at
    `rate`) on `connections` keep-alive connections under a progress line headed `label`; what
    each customer was answered is added to `placed`, for the closing audit. PostgreSQL's CPU
    leaves out the backends of `other_databases` (another stack's on the same server)."""
    postmaster = await postmaster_pid(database_url)
    async with http_session(stack.url("gateway"), connections) as session:
        prepared = await prepare_checkouts(session, skus, checkouts, card=CARD)
        before = sample_cpu(stack, postmaster, other_databases=other_databases)
        line = ProgressLine(f"{label}: checkouts", len(prepared))
        if rate is None:
            assert concurrency is not None
            window = await closed_loop(session, prepared, concurrency, line)
        else:
            window = await open_loop(session, prepared, rate, line)
        line.finish()
        order_ids = [a.order_id for a in window.attempts if a.order_id]
        outcomes = await settled_outcomes(database_url, order_ids)
        # The consumers may lag behind the saga: their work for these orders is the step's too.
        await pipeline_drained(database_url)
        cpu = sample_cpu(stack, postmaster, other_databases=other_databases).since(before)
    placed += client_checkouts(window.attempts)
    return TimedStep(window=window, outcomes=outcomes, cpu=cpu)


async def run_step(
    stack: LaunchedStack,
    database_url: str,
    skus: Sequence[str],
    plan: LoadPlan,
    placed: list[ClientCheckout],
    *,
    stored: int,
    mode: str = "closed",
    concurrency: int | None = None,
    rate: float | None = None,
    checkouts: int | None = None,
) -> dict[str, Any]:
    """One step of the ramp (time_step), summarised."""
    load = f"open {rate:.1f}/s" if rate is not None else f"{mode} c={concurrency}"
    timed = await time_step(
        stack, database_url, skus, placed, label=f"  stored={stored:,} {load}",
        checkouts=checkouts or plan.checkouts, connections=max(max(plan.concurrency), 256),
        concurrency=concurrency, rate=rate,
    )  # fmt: skip
    return summarise(
        timed.window, timed.outcomes, timed.cpu, stored=stored,
        mode="open" if rate is not None else mode, concurrency=concurrency, offered_rate=rate,
    )  # fmt: skip


def _print_step(step: dict[str, Any]) -> None:
    if step["mode"] == "open":
        load = f"open {step['offered_per_second']:.1f}/s"
    else:
        load = f"{step['mode']} c={step['concurrency']:>3}"
    accept, confirm = step["accept_ms"], step["confirmed_ms"]
    print(
        f"  stored={step['stored_orders']:>9,} {load:>13}:"
        f" accepted {step['accepted_per_second']:7.1f}/s"
        f"  confirmed {step['confirmed_per_second']:7.1f}/s"
        f"  accept p50/p95/p99 {accept['p50']}/{accept['p95']}/{accept['p99']} ms"
        f"  CONFIRMED p50/p95/p99 {confirm['p50']}/{confirm['p95']}/{confirm['p99']} ms"
        f"  cpu {step['cpu_seconds_per_checkout'] * 1000:.1f} ms/checkout"
        f"  (not confirmed {step['not_confirmed'] or 0}, answers {step['answers']})",
        flush=True,
    )


async def bench(plan: LoadPlan, settings: BenchSettings) -> dict[str, Any]:
    """Run the baselines, every step and the closing audit; return the report."""
    steps: list[dict[str, Any]] = []
    placed: list[ClientCheckout] = []
    stored_seconds: dict[int, float] = {}
    async with postgres_server(settings) as (server_url, kind):
        print("baselines: grpc.aio ping, then pgbench -N on the same server", flush=True)
        ping = await grpc_echo_calls(seconds=plan.ping_seconds)
        pgbench = await pgbench_simple_update(
            server_url, seconds=plan.pgbench_seconds, scale=plan.pgbench_scale
        )
        for baseline in (ping, pgbench):
            print(f"  {baseline.name}: {baseline.per_second} /s ({baseline.detail})", flush=True)
        async with fresh_database(server_url) as database_url:
            with tempfile.TemporaryDirectory(prefix="bench-stack-") as data_dir:
                async with running_stack(
                    database_url=database_url,
                    data_dir=Path(data_dir),
                    extra_env=stack_settings(plan),
                ) as stack:
                    skus = await stock_catalog_via(stack, plan)
                    # Warm every process's connections and caches; not reported.
                    await run_step(stack, database_url, skus, plan, placed, stored=0,
                                   concurrency=4, checkouts=WARMUP_CHECKOUTS)  # fmt: skip
                    for stored in plan.stored:
                        stored_seconds[stored] = await store_orders(database_url, stored)
                        print(f"stored orders: {stored:,} ({stored_seconds[stored]:.0f}s to "
                              "write)", flush=True)  # fmt: skip
                        if stored == plan.stored[0]:
                            step = await run_step(stack, database_url, skus, plan, placed,
                                                  stored=stored, mode="unloaded", concurrency=1,
                                                  checkouts=plan.unloaded_checkouts)  # fmt: skip
                            _print_step(step)
                            steps.append(step)
                        steps += await _ramp(stack, database_url, skus, plan, placed, stored)
                    print("audit: every order of the run, once all have settled", flush=True)
                    audit = await audit_run(
                        stack,
                        database_url,
                        initial_stock=dict.fromkeys(skus, ON_HAND),
                        checkouts=placed,
                    )
                    print_audit(audit)
    return report(plan, kind, ping, pgbench, steps, stored_seconds, audit)


async def _ramp(
    stack: LaunchedStack,
    database_url: str,
    skus: Sequence[str],
    plan: LoadPlan,
    placed: list[ClientCheckout],
    stored: int,
) -> list[dict[str, Any]]:
    """The closed-loop steps at rising concurrency, then the open-loop one at the fraction."""
    ramp = []
    for concurrency in plan.concurrency:
        step = await run_step(stack, database_url, skus, plan, placed, stored=stored,
                              concurrency=concurrency)  # fmt: skip
        _print_step(step)
        ramp.append(step)
    peak = max(s["confirmed_per_second"] for s in ramp)
    step = await run_step(stack, database_url, skus, plan, placed, stored=stored,
                          rate=peak * plan.peak_fraction)  # fmt: skip
    _print_step(step)
    return [*ramp, step]


async def stock_catalog_via(stack: LaunchedStack, plan: LoadPlan) -> list[str]:
    """The catalog the carts pick from, made through the gateway's admin routes."""
    async with http_session(stack.url("gateway"), 8) as session:
        return await stock_catalog(session, plan.skus)


def report(
    plan: LoadPlan,
    kind: str,
    ping: Baseline,
    pgbench: Baseline,
    steps: list[dict[str, Any]],
    stored_seconds: dict[int, float],
    audit: AuditReport,
) -> dict[str, Any]:
    """Peaks per stored level, ratios to the baselines, each target met or not, the audit."""
    per_stored: dict[int, dict[str, Any]] = {}
    for stored in plan.stored:
        ramp = [s for s in steps if s["stored_orders"] == stored and s["mode"] == "closed"]
        at_fraction = next(s for s in steps if s["stored_orders"] == stored and s["mode"] == "open")
        peak = max(ramp, key=lambda s: s["confirmed_per_second"])
        per_stored[stored] = {
            "peak_confirmed_per_second": peak["confirmed_per_second"],
            "peak_at_concurrency": peak["concurrency"],
            "peak_cpu_seconds_per_checkout": peak["cpu_seconds_per_checkout"],
            "peak_cpu_ms_per_checkout_by_process": peak["cpu_ms_per_checkout"],
            "at_peak_fraction": {
                "offered_per_second": at_fraction["offered_per_second"],
                "accept_p99_ms": at_fraction["accept_ms"]["p99"],
                "confirmed_p50_ms": at_fraction["confirmed_ms"]["p50"],
                "confirmed_p99_ms": at_fraction["confirmed_ms"]["p99"],
            },
            "seconds_to_store": round(stored_seconds[stored], 1),
        }
    unloaded = next(s for s in steps if s["mode"] == "unloaded")
    first = per_stored[plan.stored[0]]
    ratios = {
        "confirmed_per_pgbench_tps": _ratio(first["peak_confirmed_per_second"], pgbench),
        "confirmed_per_grpc_ping": _ratio(first["peak_confirmed_per_second"], ping),
    }
    return {
        "server": kind,
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()},
        "baselines": {b.name: asdict(b) for b in (pgbench, ping)},
        "ratios": ratios,
        "unloaded": {
            "checkouts": unloaded["sent"],
            "accept_ms": unloaded["accept_ms"],
            "confirmed_ms": unloaded["confirmed_ms"],
        },
        "per_stored": per_stored,
        "targets": targets(plan, per_stored, ratios, unloaded),
        "audit": audit.as_json(),
        "steps": steps,
    }


def _ratio(value: float, baseline: Baseline) -> float | None:
    return round(value / baseline.per_second, 4) if baseline.per_second else None


def targets(
    plan: LoadPlan,
    per_stored: dict[int, dict[str, Any]],
    ratios: dict[str, float | None],
    unloaded: dict[str, Any],
) -> dict[str, Any]:
    """Issue 15's targets against this run's figures (met is None when not measured)."""
    first = per_stored[plan.stored[0]]
    at = first["at_peak_fraction"]
    cpu_ms = first["peak_cpu_seconds_per_checkout"] * 1000
    rate, rate_aim = TARGET_CONFIRMED_PER_SECOND
    cpu, cpu_aim = TARGET_CPU_MS_PER_CHECKOUT
    found = {
        f"settled checkouts/s at the best concurrency >= {rate:g} (aim {rate_aim:g})": _met(
            first["peak_confirmed_per_second"], ">=", rate, aim=rate_aim
        ),
        f"settled/s >= {TARGET_PGBENCH_RATIO:.0%} of pgbench -N TPS": _met(
            ratios["confirmed_per_pgbench_tps"], ">=", TARGET_PGBENCH_RATIO
        ),
        f"CPU ms per checkout, stack + PostgreSQL, at the peak <= {cpu:g} (aim {cpu_aim:g})": (
            _met(round(cpu_ms, 1), "<=", cpu, aim=cpu_aim)
        ),
        f"unloaded POST to CONFIRMED p50 <= {TARGET_UNLOADED_CONFIRMED_P50_MS:g} ms": _met(
            unloaded["confirmed_ms"]["p50"], "<=", TARGET_UNLOADED_CONFIRMED_P50_MS
        ),
        f"accept p99 <= {TARGET_ACCEPT_P99_MS:g} ms at {plan.peak_fraction:.0%} of peak": _met(
            at["accept_p99_ms"], "<=", TARGET_ACCEPT_P99_MS
        ),
        f"CONFIRMED p99 <= {TARGET_CONFIRMED_P99_MS:g} ms at {plan.peak_fraction:.0%} of peak": (
            _met(at["confirmed_p99_ms"], "<=", TARGET_CONFIRMED_P99_MS)
        ),
    }
    drift_name = f"1,000,000 stored within {TARGET_STORED_DRIFT:.0%} of 10,000 (peak settled/s)"
    if 10_000 in plan.stored and 1_000_000 in plan.stored:
        base = per_stored[10_000]["peak_confirmed_per_second"]
        largest = per_stored[1_000_000]["peak_confirmed_per_second"]
        drift = round(abs(largest - base) / base, 3) if base else None
        found[drift_name] = _met(drift, "<=", TARGET_STORED_DRIFT)
    else:
        found[drift_name] = _met(None, "<=", TARGET_STORED_DRIFT)
    return found


def _met(
    value: float | None, op: str, target: float, *, aim: float | None = None
) -> dict[str, Any]:
    verdict: dict[str, Any] = {"value": value, "target": f"{op} {target:g}", "met": None}
    if aim is not None:
        verdict |= {"aim": f"{op} {aim:g}", "aim_met": None}
    if value is None:
        return verdict
    compare = operator.ge if op == ">=" else operator.le
    verdict["met"] = compare(value, target)
    if aim is not None:
        verdict["aim_met"] = compare(value, aim)
    return verdict


def print_summary(result: dict[str, Any]) -> None:
    """The baselines, the ratios, CPU per process, the targets and the audit, after the steps."""
    print("baselines:")
    for name, baseline in result["baselines"].items():
        print(f"  {name}: {baseline['per_second']} /s")
    print("ratios: " + ", ".join(f"{k} = {v}" for k, v in result["ratios"].items()))
    unloaded = result["unloaded"]
    print(f"unloaded ({unloaded['checkouts']} one at a time): accept {unloaded['accept_ms']} ms, "
          f"CONFIRMED {unloaded['confirmed_ms']} ms")  # fmt: skip
    for stored, figures in result["per_stored"].items():
        print(f"stored {stored:,}: peak {figures['peak_confirmed_per_second']} settled/s at "
              f"c={figures['peak_at_concurrency']}, at {result['plan']['peak_fraction']:.0%}: "
              f"{figures['at_peak_fraction']}")  # fmt: skip
        _print_cpu_split(figures)
    print("targets (goals, not gates):")
    marks = {True: "met", False: "NOT met", None: "not measured"}
    for name, verdict in result["targets"].items():
        aim = f"; aim {verdict['aim']}: {marks[verdict['aim_met']]}" if "aim" in verdict else ""
        print(f"  {name}: {verdict['value']} ({marks[verdict['met']]}{aim})")
    audit = result["audit"]
    verdict = "passed" if audit["passed"] else f"FAILED, {len(audit['mismatches'])} mismatch(es)"
    print(f"audit: {audit['orders_audited']} orders, {audit['psp_intents']} PSP intents, "
          f"{audit['skus']} SKUs: {verdict}")  # fmt: skip


def _print_cpu_split(figures: dict[str, Any]) -> None:
    spent = dict(figures["peak_cpu_ms_per_checkout_by_process"])
    generator = spent.pop("load generator", 0.0)
    split = ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(spent.items(), key=lambda i: -i[1]))
    total = figures["peak_cpu_seconds_per_checkout"] * 1000
    print(f"  CPU ms per checkout at the peak: {total:.1f} (stack + PostgreSQL) = {split}; "
          f"load generator {generator:.1f} apart")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run on uvloop, print, write the JSON and the plot if asked; 1 when the
    closing audit found a mismatch."""
    plan = parse_plan(argv)
    result = uvloop.run(bench(plan, BenchSettings()))
    print_summary(result)
    if plan.json_path is not None:
        plan.json_path.parent.mkdir(parents=True, exist_ok=True)
        plan.json_path.write_text(json.dumps(result, indent=2) + "\n")
    if plan.plot_path is not None:
        from bench.checkout_plot import write_plot

        write_plot(result["steps"], plan.plot_path)
    return exit_code(result)


def exit_code(result: dict[str, Any]) -> int:
    """0 when the audit passed, else EXIT_AUDIT_FAILED (speed never fails a run)."""
    return 0 if result["audit"]["passed"] else EXIT_AUDIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
