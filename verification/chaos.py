"""`python -m verification.chaos` (`make chaos`): the whole stack under a seeded storm of
customers and faults, then every invariant checked; exits 1 on any violation."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from marketplace_platform.queues.definitions import DEFAULT_RULES_FILE, load_queue_definitions
from simulators.psp.faults import FaultConfig
from verification import chaos_plot, collect, customers, faults
from verification.invariants import Verdict, check_all
from verification.plan import OUTAGE_SECONDS, ChaosPlan, CheckoutPlan, make_plan
from verification.report import RunFacts, render, timeouts_by_phase
from verification.snapshot import ClientCheckout, InjectedPoison
from verification.stack import REPO, ChaosStack, fresh_database, kill_targets, running_stack

log = logging.getLogger("verification.chaos")
EXIT_VIOLATION = 1
EXIT_HARNESS_ERROR = 2


@dataclass(frozen=True, kw_only=True)
class ChaosOptions:
    """One run's knobs."""

    seed: int
    checkouts: int
    kills: int
    redis_restarts: int
    concurrency: int
    settle_within: float
    outage_seconds: float
    data_dir: Path
    database_server: str | None  # None: an embedded PostgreSQL for the run


def parse_options(argv: Sequence[str]) -> ChaosOptions:
    """The command line (DATABASE_URL names a server to create the run's database on)."""
    parser = argparse.ArgumentParser(prog="python -m verification.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument("--checkouts", type=int, default=2000, help="customers (default 2000)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs during the load")
    parser.add_argument("--redis-restarts", type=int, default=1, help="Redis kills")
    parser.add_argument("--concurrency", type=int, default=32, help="customers at once")
    parser.add_argument(
        "--settle-within", type=float, default=300.0, help="seconds for orders to settle"
    )
    parser.add_argument(
        "--outage-seconds", type=float, default=OUTAGE_SECONDS,
        help=f"each long PSP outage (default {OUTAGE_SECONDS:.0f}; 0: none)",
    )  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=None, help="logs and embedded data")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    return ChaosOptions(
        seed=args.seed if args.seed is not None else secrets.randbelow(2**31),
        checkouts=args.checkouts,
        kills=args.kills,
        redis_restarts=args.redis_restarts,
        concurrency=args.concurrency,
        settle_within=args.settle_within,
        outage_seconds=args.outage_seconds,
        data_dir=data_dir.resolve(),
        database_server=os.environ.get("DATABASE_URL") or None,
    )


def replay_command(options: ChaosOptions) -> str:
    """The command that replays this run's plan."""
    return (
        f"python -m verification.chaos --seed {options.seed} --checkouts {options.checkouts} "
        f"--kills {options.kills} --redis-restarts {options.redis_restarts} "
        f"--concurrency {options.concurrency} --outage-seconds {options.outage_seconds:g}"
    )


async def drive_load(
    stack: ChaosStack, plan: ChaosPlan, options: ChaosOptions, traffic: customers.Traffic
) -> tuple[list[customers.CheckoutResult], faults.FaultLog]:
    """Every planned customer against the gateway while the planned faults strike."""
    fault_log = faults.FaultLog()
    progress = faults.Progress(len(plan.checkouts))
    limits = httpx.Limits(max_connections=options.concurrency * 5)
    async with (
        httpx.AsyncClient(base_url=stack.url("gateway"), limits=limits) as gateway,
        httpx.AsyncClient(base_url=stack.url("psp")) as psp,
        faults.confirmed_probe(stack, f"chaos-{plan.run_id}-") as any_confirmed,
    ):
        await customers.stock_catalog(
            gateway, traffic, prices=plan.prices, initial_stock=plan.initial_stock
        )
        injectors = [
            asyncio.create_task(faults.run_kills(stack, plan.kills, progress, fault_log)),
            asyncio.create_task(
                faults.run_psp_phases(
                    psp, plan.psp_phases, progress, fault_log, any_confirmed=any_confirmed
                )
            ),
            asyncio.create_task(
                faults.run_redis_restarts(stack, plan.redis_restarts, progress, fault_log)
            ),
            asyncio.create_task(faults.run_poison(stack, plan.poison, progress, fault_log)),
        ]
        seats = asyncio.Semaphore(options.concurrency)

        async def customer(checkout: CheckoutPlan) -> customers.CheckoutResult:
            async with seats:
                result = await customers.check_out(gateway, traffic, checkout)
            await progress.advance()  # the live line: done/total, rate, elapsed
            return result

        results = await asyncio.gather(*(customer(c) for c in plan.checkouts))
        await asyncio.gather(*injectors)
        await faults.set_psp_faults(psp, {})  # the faults stop here; settling starts
    if progress.line is not None:
        fault_log.load_samples = progress.line.samples
    return list(results), fault_log


def client_records(
    results: Sequence[customers.CheckoutResult], poison: Sequence[InjectedPoison] = ()
) -> collect.ClientRecords:
    """What the customers were answered (each key's orders, each cancel), and the poison the
    run put on its queues: the client side the invariants hold the system's records against."""
    checkouts = [
        ClientCheckout(
            customer_id=r.plan.customer_id,
            idempotency_key=r.plan.idempotency_key,
            cart_id=r.cart_id,
            order_ids=frozenset(r.order_ids),
        )
        for r in results
        if r.cart_id is not None
    ]
    return collect.ClientRecords(
        checkouts=checkouts,
        cancels=[r.cancel for r in results if r.cancel is not None],
        poison=poison,
    )


async def run(options: ChaosOptions) -> int:
    """One full chaos run; the exit code."""
    plan = make_plan(
        seed=options.seed,
        checkouts=options.checkouts,
        kills=options.kills,
        kill_targets=kill_targets(),
        redis_restarts=options.redis_restarts,
        outage_seconds=options.outage_seconds,
        poison_queues=[q.name for q in load_queue_definitions(REPO / DEFAULT_RULES_FILE)],
        psp_fault_fields=frozenset(FaultConfig.model_fields),
    )
    scope = collect.Scope(f"chaos-{plan.run_id}-", tuple(plan.initial_stock))
    traffic = customers.Traffic()
    rng = random.Random(options.seed)
    async with (
        fresh_database(options.database_server, options.data_dir) as database_url,
        running_stack(database_url=database_url, data_dir=options.data_dir, rng=rng) as stack,
    ):
        log.info("stack SERVING; %d checkouts, %d kills", options.checkouts, options.kills)
        started = time.monotonic()
        results, fault_log = await drive_load(stack, plan, options, traffic)
        load_seconds = time.monotonic() - started
        processes = set(stack.processes())
        pipeline = collect.has_relay(processes)
        waited, unsettled = await collect.settle(
            stack, scope, within=options.settle_within, pipeline=pipeline
        )
        log.info("settled in %.0fs (%d orders unsettled)", waited, unsettled)
        clients = client_records(results, fault_log.poison)
        async with httpx.AsyncClient(base_url=stack.url("psp")) as psp:
            snapshot, orphans = await collect.take_snapshot(
                stack,
                psp,
                scope,
                initial_stock=plan.initial_stock,
                clients=clients,
                settle_seconds=options.settle_within if unsettled else waited,
            )
        restarts = stack.restarts_seen()
    results_checked = check_all(snapshot)
    facts = RunFacts(
        seed=options.seed,
        replay=replay_command(options),
        checkouts=options.checkouts,
        load_seconds=load_seconds,
        settle_seconds=waited,
        restarts_seen=restarts,
        orphans_voided=orphans,
        data_dir=str(options.data_dir),
        phases_left_out=plan.left_out,
    )
    print(render(facts, snapshot, traffic, fault_log, results_checked), flush=True)
    json_path, png_path = options.data_dir / "chaos.json", options.data_dir / "chaos.png"
    chaos_plot.write_report(
        chaos_plot.figures(
            seed=options.seed,
            samples=fault_log.load_samples,
            kills=fault_log.kills,
            phases=timeouts_by_phase(snapshot, fault_log.psp_phases, options.checkouts),
        ),
        json_path,
        png_path,
    )
    print(f"figures: {json_path}, plot: {png_path}", flush=True)
    failed = any(r.verdict is Verdict.FAIL for r in results_checked)
    return EXIT_VIOLATION if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, print the seed, run; 0 when every checked invariant holds."""
    # Only the harness's own progress at INFO: libraries' per-request lines drown the run.
    logging.basicConfig(
        level=logging.WARNING, format="chaos | %(message)s", stream=sys.stderr, force=True
    )
    logging.getLogger("verification").setLevel(logging.INFO)
    options = parse_options(sys.argv[1:] if argv is None else argv)
    print(f"chaos seed {options.seed}; replay with: {replay_command(options)}", flush=True)
    try:
        return asyncio.run(run(options))
    except Exception:
        log.exception("the chaos run could not complete (seed %d)", options.seed)
        return EXIT_HARNESS_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
