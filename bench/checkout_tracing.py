"""What tracing costs: the checkout benchmark with tracing off and on, in one run, interleaved.

Starts two stacks side by side (`python -m local_supervisor` each, on its own fresh database of
the same PostgreSQL server, DATABASE_URL's or an embedded one): one with tracing off
(OTEL_TRACES_EXPORTER=none), one tracing as `make run` does (the jsonl exporter, OTLP/JSON
lines under its data folder) at the default sampling ratio, OTEL_TRACES_SAMPLER_ARG (--ratio
to measure another). Both are stocked and warmed, their idle CPU is sampled, then each round
times on each stack `--unloaded-checkouts` checkouts one at a time and a closed-loop step of
`--checkouts` at `--concurrency`, the stacks taking turns (off first in odd rounds, on first in
even ones), so the machine's load falls on both. Per mode it reports the median over rounds of
settled checkouts/s and of CPU ms per checkout (every stack process and PostgreSQL's backends
of that stack's database; bench.checkout_load's figures), the accept and time-to-CONFIRMED
percentiles over every round's checkouts, the spans the stack exported, and each figure's
on/off ratio. Ends with the audit of every order of both stacks and exits 1 on any mismatch;
it never asserts a speed. `make bench-tracing` runs it; `--help` for the knobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from sqlalchemy.engine import make_url

from bench.checkout_audit import AuditReport, audit_run, print_audit
from bench.checkout_load import (
    CONFIRMED_OR_LATER,
    WARMUP_CHECKOUTS,
    LoadPlan,
    TimedStep,
    percentiles,
    stack_settings,
    stock_catalog_via,
    summarise,
    time_step,
)
from bench.checkout_stack import postmaster_pid, running_stack, sample_cpu, stack_seconds
from bench.checkout_traffic import ON_HAND
from bench.inventory_reservations import BenchSettings, fresh_database, postgres_server
from local_supervisor.launcher import LaunchedStack
from marketplace_platform.settings import TracingSettings
from marketplace_platform.trace_files import read_spans
from verification.report import figures_table
from verification.snapshot import ClientCheckout

MODES = ("off", "on")
EXIT_AUDIT_FAILED = 1
SESSION_CONNECTIONS = 256


@dataclass(frozen=True, kw_only=True)
class TracingPlan:
    """What to run: rounds, each step's size, the sampling ratio while tracing, the outputs."""

    rounds: int
    concurrency: int
    checkouts: int
    unloaded_checkouts: int
    warmup_checkouts: int
    idle_seconds: float
    skus: int
    ratio: float
    json_path: Path | None
    plot_path: Path | None


def parse_plan(argv: Sequence[str] | None = None) -> TracingPlan:
    """The plan from the command line."""
    default_ratio = TracingSettings.model_fields["otel_traces_sampler_arg"].default
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds; each times both stacks, taking turns")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--checkouts", type=int, default=200, help="checkouts per closed step")
    parser.add_argument("--unloaded-checkouts", type=int, default=10,
                        help="checkouts one at a time per round and stack")  # fmt: skip
    parser.add_argument("--warmup-checkouts", type=int, default=WARMUP_CHECKOUTS,
                        help="unmeasured checkouts per stack before the first round")  # fmt: skip
    parser.add_argument("--idle-seconds", type=float, default=5.0,
                        help="seconds both stacks' idle CPU is sampled for")  # fmt: skip
    parser.add_argument("--skus", type=int, default=100, help="products the carts pick from")
    parser.add_argument("--ratio", type=float, default=default_ratio,
                        help="OTEL_TRACES_SAMPLER_ARG of the traced stack (default: the "
                        "setting's default)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--plot", type=Path, default=None, help="write the PNG plot here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.concurrency < 1 or args.skus < 1:
        parser.error("rounds, concurrency and skus >= 1")
    if min(args.checkouts, args.unloaded_checkouts) < 2 or args.warmup_checkouts < 0:
        parser.error("checkouts >= 2, unloaded-checkouts >= 2, warmup-checkouts >= 0")
    if not 0 <= args.ratio <= 1 or args.idle_seconds <= 0:
        parser.error("0 <= ratio <= 1, idle-seconds > 0")
    return TracingPlan(
        rounds=args.rounds,
        concurrency=args.concurrency,
        checkouts=args.checkouts,
        unloaded_checkouts=args.unloaded_checkouts,
        warmup_checkouts=args.warmup_checkouts,
        idle_seconds=args.idle_seconds,
        skus=args.skus,
        ratio=args.ratio,
        json_path=args.json,
        plot_path=args.plot,
    )


def tracing_env(mode: str, ratio: float) -> dict[str, str]:
    """The tracing settings of a mode's stack: off, or the jsonl exporter `make run` uses (its
    folder the supervisor's default, <data_dir>/traces) sampling `ratio`."""
    if mode == "off":
        return {"OTEL_TRACES_EXPORTER": "none"}
    return {"OTEL_TRACES_EXPORTER": "jsonl", "OTEL_TRACES_SAMPLER_ARG": repr(ratio)}


def load_plan(plan: TracingPlan, mode: str) -> LoadPlan:
    """The checkout benchmark's plan for one mode's stack: its settings (the throttle out of
    the way, as bench.checkout_load has them) and step sizes."""
    return LoadPlan(
        concurrency=(plan.concurrency,),
        checkouts=plan.checkouts,
        unloaded_checkouts=plan.unloaded_checkouts,
        stored=(0,),
        skus=plan.skus,
        peak_fraction=1.0,
        pgbench_seconds=0,
        pgbench_scale=0,
        ping_seconds=0.0,
        stack_env=tracing_env(mode, plan.ratio),
        json_path=None,
        plot_path=None,
    )


@dataclass(kw_only=True)
class ModeStack:
    """One mode's running stack, its database and data folder, and what was measured on it."""

    mode: str
    settings: dict[str, str]
    stack: LaunchedStack
    database_url: str
    data_dir: Path
    skus: list[str] = field(default_factory=list)
    placed: list[ClientCheckout] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    timed: dict[str, list[TimedStep]] = field(
        default_factory=lambda: {"unloaded": [], "closed": []}
    )
    idle_cpu_ms_per_second: float | None = None

    @property
    def database(self) -> str:
        """The database's name."""
        return database_name(self.database_url)


def database_name(url: str) -> str:
    """The database a PostgreSQL URL names (an embedded server's has its socket folder in the
    query: postgresql://postgres:@/bench_1a2b?host=/tmp/pg)."""
    name = make_url(url).database
    if not name:
        raise ValueError(f"no database in {url!r}")
    return name


@asynccontextmanager
async def mode_stack(
    plan: TracingPlan, mode: str, server_url: str, scratch: Path
) -> AsyncIterator[ModeStack]:
    """A fresh database and a running stack for `mode`, until the block ends."""
    settings = stack_settings(load_plan(plan, mode))
    data_dir = scratch / mode
    async with (
        fresh_database(server_url) as database_url,
        running_stack(database_url=database_url, data_dir=data_dir, extra_env=settings) as stack,
    ):
        yield ModeStack(
            mode=mode, settings=settings, stack=stack, database_url=database_url,
            data_dir=data_dir,
        )  # fmt: skip


async def timed_step(
    run: ModeStack, other: ModeStack, plan: TracingPlan, *, kind: str, round_number: int
) -> dict[str, Any]:
    """One step on `run`'s stack (`kind` unloaded: one at a time; closed: at the plan's
    concurrency), kept for the pooled percentiles, summarised and printed."""
    concurrency = 1 if kind == "unloaded" else plan.concurrency
    checkouts = plan.unloaded_checkouts if kind == "unloaded" else plan.checkouts
    timed = await time_step(
        run.stack, run.database_url, run.skus, run.placed,
        label=f"  round {round_number} tracing {run.mode:>3} {kind} c={concurrency}",
        checkouts=checkouts, connections=SESSION_CONNECTIONS, concurrency=concurrency,
        other_databases=(other.database,),
    )  # fmt: skip
    run.timed[kind].append(timed)
    step = summarise(timed.window, timed.outcomes, timed.cpu, stored=0, mode=kind,
                     concurrency=concurrency, offered_rate=None)  # fmt: skip
    step = {"tracing": run.mode, "round": round_number,
            "started_at": round(timed.window.started_at, 3), **step}  # fmt: skip
    run.steps.append(step)
    _print_step(step)
    return step


def _print_step(step: dict[str, Any]) -> None:
    accept, confirm = step["accept_ms"], step["confirmed_ms"]
    print(
        f"  round {step['round']} tracing {step['tracing']:>3} {step['mode']:>8}"
        f" c={step['concurrency']:<3}: settled {step['confirmed_per_second']:6.1f}/s"
        f"  cpu {step['cpu_seconds_per_checkout'] * 1000:6.1f} ms/checkout"
        f"  accept p50/p99 {accept['p50']}/{accept['p99']} ms"
        f"  CONFIRMED p50/p99 {confirm['p50']}/{confirm['p99']} ms"
        f"  (not confirmed {step['not_confirmed'] or 0}, answers {step['answers']})",
        flush=True,
    )


async def idle_cpu(runs: Sequence[ModeStack], seconds: float) -> None:
    """Each stack's CPU ms per second while no checkout runs (both idle together)."""
    postmaster = await postmaster_pid(runs[0].database_url)
    others = {run.mode: tuple(o.database for o in runs if o is not run) for run in runs}
    before = {r.mode: sample_cpu(r.stack, postmaster, other_databases=others[r.mode]) for r in runs}
    await asyncio.sleep(seconds)  # the measured window itself
    for run in runs:
        after = sample_cpu(run.stack, postmaster, other_databases=others[run.mode])
        spent = after.since(before[run.mode])
        run.idle_cpu_ms_per_second = round(stack_seconds(spent) * 1000 / seconds, 1)


async def measure(plan: TracingPlan, runs: dict[str, ModeStack]) -> None:
    """Stock and warm both stacks, sample their idle CPU, then the rounds, taking turns."""
    for run in runs.values():
        run.skus = await stock_catalog_via(run.stack, load_plan(plan, run.mode))
        if plan.warmup_checkouts:
            # Every process's connections and caches warmed; not reported.
            await time_step(
                run.stack, run.database_url, run.skus, run.placed,
                label=f"  warm-up tracing {run.mode}", checkouts=plan.warmup_checkouts,
                connections=SESSION_CONNECTIONS, concurrency=4,
            )  # fmt: skip
    await idle_cpu(list(runs.values()), plan.idle_seconds)
    print("idle CPU ms/s: " + ", ".join(
        f"tracing {r.mode} {r.idle_cpu_ms_per_second}" for r in runs.values()
    ), flush=True)  # fmt: skip
    for round_number in range(1, plan.rounds + 1):
        order = MODES if round_number % 2 else tuple(reversed(MODES))
        for mode in order:
            run, other = runs[mode], runs[next(m for m in MODES if m != mode)]
            for kind in ("unloaded", "closed"):
                await timed_step(run, other, plan, kind=kind, round_number=round_number)


async def bench(plan: TracingPlan, settings: BenchSettings) -> dict[str, Any]:
    """Both stacks, the rounds, the audits, the spans each exported; return the report."""
    audits: dict[str, AuditReport] = {}
    async with postgres_server(settings) as (server_url, kind):
        with tempfile.TemporaryDirectory(prefix="bench-tracing-") as scratch:
            async with AsyncExitStack() as held:
                runs: dict[str, ModeStack] = {}
                for mode in MODES:
                    print(f"starting the stack with tracing {mode}", flush=True)
                    runs[mode] = await held.enter_async_context(
                        mode_stack(plan, mode, server_url, Path(scratch))
                    )
                await measure(plan, runs)
                for run in runs.values():
                    print(f"audit, tracing {run.mode}: every order of its stack", flush=True)
                    audits[run.mode] = await audit_run(
                        run.stack, run.database_url,
                        initial_stock=dict.fromkeys(run.skus, ON_HAND), checkouts=run.placed,
                    )  # fmt: skip
                    print_audit(audits[run.mode])
            # The stacks have stopped, their processes' last batches of spans written.
            spans = {mode: span_counts(run) for mode, run in runs.items()}
    return report(plan, kind, runs, spans, audits)


def span_counts(run: ModeStack) -> dict[str, int]:
    """The spans, traces and span files the stack's jsonl exporter wrote."""
    folder = run.data_dir / "traces"
    spans = list(read_spans(folder)) if folder.is_dir() else []
    return {
        "span_files": len(list(folder.glob("*.jsonl"))) if folder.is_dir() else 0,
        "spans": len(spans),
        "traces": len({span["traceId"] for span in spans}),
    }


def mode_figures(run: ModeStack, spans: dict[str, int]) -> dict[str, Any]:
    """One mode's figures: medians over its closed-loop rounds, percentiles pooled over them."""
    closed = [s for s in run.steps if s["mode"] == "closed"]
    rates = [s["confirmed_per_second"] for s in closed]
    cpu_ms = [round(s["cpu_seconds_per_checkout"] * 1000, 1) for s in closed]
    processes = sorted({name for s in closed for name in s["cpu_ms_per_checkout"]})
    return {
        "settings": {k: v for k, v in run.settings.items() if k.startswith("OTEL_")},
        "settled_per_second": round(statistics.median(rates), 1),
        "settled_per_second_by_round": rates,
        "cpu_ms_per_checkout": round(statistics.median(cpu_ms), 1),
        "cpu_ms_per_checkout_by_round": cpu_ms,
        "cpu_ms_per_checkout_by_process": {
            name: round(
                statistics.median(s["cpu_ms_per_checkout"].get(name, 0.0) for s in closed), 2
            )
            for name in processes
        },
        "closed": _pooled(run.timed["closed"]),
        "unloaded": _pooled(run.timed["unloaded"]),
        "idle_cpu_ms_per_second": run.idle_cpu_ms_per_second,
        "checkouts_placed": len(run.placed),
        **spans,
        "spans_per_checkout": round(spans["spans"] / len(run.placed), 1) if run.placed else None,
    }


def _pooled(steps: Sequence[TimedStep]) -> dict[str, Any]:
    """Accept and time-to-CONFIRMED percentiles over every checkout of `steps`."""
    accept: list[float] = []
    confirmed: list[float] = []
    for step in steps:
        sent_at = {}
        for attempt in step.window.attempts:
            if attempt.status == 202 and attempt.order_id:
                accept.append(attempt.seconds)
                sent_at[attempt.order_id] = attempt.sent_at
        confirmed += [
            o.settled_at - sent_at[o.order_id]
            for o in step.outcomes
            if o.status in CONFIRMED_OR_LATER and o.order_id in sent_at
        ]
    return {
        "checkouts": len(accept),
        "confirmed": len(confirmed),
        "accept_ms": percentiles(accept),
        "confirmed_ms": percentiles(confirmed),
    }


def ratios(off: dict[str, Any], on: dict[str, Any]) -> dict[str, float | None]:
    """Each headline figure traced over untraced (above 1: tracing costs that much more; for
    settled/s, below 1: that much slower)."""
    pairs = {
        "settled_per_second": (on["settled_per_second"], off["settled_per_second"]),
        "cpu_ms_per_checkout": (on["cpu_ms_per_checkout"], off["cpu_ms_per_checkout"]),
        "idle_cpu_ms_per_second": (on["idle_cpu_ms_per_second"], off["idle_cpu_ms_per_second"]),
    }
    for kind in ("closed", "unloaded"):
        for figure in ("accept_ms", "confirmed_ms"):
            for cut in ("p50", "p95", "p99"):
                pairs[f"{kind}_{figure.removesuffix('_ms')}_{cut}"] = (
                    on[kind][figure][cut], off[kind][figure][cut]
                )  # fmt: skip
    return {
        name: round(traced / untraced, 3) if traced is not None and untraced else None
        for name, (traced, untraced) in pairs.items()
    }


def report(
    plan: TracingPlan,
    kind: str,
    runs: dict[str, ModeStack],
    spans: dict[str, dict[str, int]],
    audits: dict[str, AuditReport],
) -> dict[str, Any]:
    """The run's JSON: the plan, each mode's figures, the on/off ratios, the audits, and the
    steps in the order they ran."""
    modes = {mode: mode_figures(runs[mode], spans[mode]) for mode in MODES}
    return {
        "server": kind,
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()},
        "modes": modes,
        "on_over_off": ratios(modes["off"], modes["on"]),
        "audit": {mode: audits[mode].as_json() for mode in MODES},
        "steps": sorted(
            (step for mode in MODES for step in runs[mode].steps), key=lambda s: s["started_at"]
        ),
    }


def table_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The closing table: each headline figure off, on and on/off."""
    off, on, ratio = result["modes"]["off"], result["modes"]["on"], result["on_over_off"]

    def row(label: str, off_value: object, on_value: object, key: str) -> tuple[str, str]:
        return label, f"{off_value!s:>10}  {on_value!s:>10}  {ratio[key]!s:>7}"

    rows = [
        ("", f"{'off':>10}  {'on':>10}  {'on/off':>7}"),
        row("settled checkouts/s (median of rounds)", off["settled_per_second"],
            on["settled_per_second"], "settled_per_second"),
        row("CPU ms per checkout (median of rounds)", off["cpu_ms_per_checkout"],
            on["cpu_ms_per_checkout"], "cpu_ms_per_checkout"),
        row("idle CPU ms per second", off["idle_cpu_ms_per_second"],
            on["idle_cpu_ms_per_second"], "idle_cpu_ms_per_second"),
    ]  # fmt: skip
    c = result["plan"]["concurrency"]
    for kind, load in (("closed", f"c={c}"), ("unloaded", "one at a time")):
        for figure, name in (("accept_ms", "accept"), ("confirmed_ms", "to CONFIRMED")):
            key = f"{kind}_{figure.removesuffix('_ms')}"
            for cut in ("p50", "p95", "p99"):
                rows.append(row(f"{name} {cut} ms, {load}", off[kind][figure][cut],
                                on[kind][figure][cut], f"{key}_{cut}"))  # fmt: skip
    rows.append(("spans exported (off / on)", f"{off['spans']} / {on['spans']} "
                 f"({on['spans_per_checkout']} per checkout placed, its cart's too)"))  # fmt: skip
    return rows


def print_summary(result: dict[str, Any]) -> None:
    """Per round the two modes' figures, then the table and the audits' verdicts."""
    plan = result["plan"]
    print(f"tracing off against on (jsonl exporter, ratio {plan['ratio']:g}); {plan['rounds']} "
          f"rounds of {plan['unloaded_checkouts']} one at a time and {plan['checkouts']} at "
          f"c={plan['concurrency']}, on {result['server']} PostgreSQL")  # fmt: skip
    for line in figures_table(table_rows(result)):
        print(line)
    for mode in MODES:
        audit = result["audit"][mode]
        verdict = (
            "passed" if audit["passed"] else f"FAILED, {len(audit['mismatches'])} mismatch(es)"
        )
        print(f"audit, tracing {mode}: {audit['orders_audited']} orders, "
              f"{audit['psp_intents']} PSP intents: {verdict}")  # fmt: skip


def exit_code(result: dict[str, Any]) -> int:
    """0 when both audits passed, else EXIT_AUDIT_FAILED (speed never fails a run)."""
    return 0 if all(audit["passed"] for audit in result["audit"].values()) else EXIT_AUDIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run on uvloop, print, write the JSON and the plot if asked; 1 when an
    audit found a mismatch."""
    plan = parse_plan(argv)
    result = uvloop.run(bench(plan, BenchSettings()))
    print_summary(result)
    if plan.json_path is not None:
        plan.json_path.parent.mkdir(parents=True, exist_ok=True)
        plan.json_path.write_text(json.dumps(result, indent=2) + "\n")
    if plan.plot_path is not None:
        from bench.checkout_plot import write_tracing_plot

        write_tracing_plot(result, plan.plot_path)
    return exit_code(result)


if __name__ == "__main__":
    sys.exit(main())
