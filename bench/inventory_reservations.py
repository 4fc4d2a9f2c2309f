"""Reservations per second on one hot SKU versus spread over 1,000 SKUs, in the same run.

The issue asks for the hot SKU at 50% or more of the spread figure; this script only reports,
it never asserts a speed. Run it with `make bench` (or `python -m bench.inventory_reservations
--help` for the knobs). With DATABASE_URL set it creates a fresh database on that server,
otherwise on an embedded PostgreSQL, and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import uvloop
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from local_supervisor.embedded import running_postgres
from marketplace_platform.db import create_engine, unit_of_work_factory
from marketplace_platform.errors import DomainError
from marketplace_platform.ids import new_id
from marketplace_platform.migrations import discover_services, upgrade
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.settings import ServiceSettings
from services.inventory.adapters import tables
from services.inventory.adapters.unit_of_work import InventoryUnitOfWork
from services.inventory.domain.reservation import ReservationLine
from services.inventory.service_layer.deps import InventoryDeps
from services.inventory.service_layer.reservations import ReserveStock, reserve_stock
from services.inventory.service_layer.stock import SetStock, set_stock
from verification.progress import ProgressLine

# The bench drives the PostgreSQL unit of work itself (a bare transaction reaches its session).
UnitOfWorkFactory = Callable[[], InventoryUnitOfWork]

HOT_SKU = "HOT-1"
SPREAD_SKUS = tuple(f"SPREAD-{number:04d}" for number in range(1_000))
UNITS_ON_HAND = 1_000_000_000  # far more than any run can reserve, so nothing is refused
RESERVATION_TTL = timedelta(minutes=15)
TARGET_RATIO = 0.5  # from the issue: hot at 50% or more of spread

Attempt = Callable[[], Awaitable[None]]


class BenchSettings(BaseSettings):
    """What the benchmark reads from the environment, once."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class BenchPlan:
    """How hard and how long to drive the reservations."""

    concurrency: int
    seconds: float
    warmup: float
    rounds: int
    json_path: Path | None


@dataclass(frozen=True, kw_only=True)
class MeasuredWindow:
    """The part of a phase that counts: after the warm-up, for the measured seconds."""

    starts: float
    ends: float


@dataclass(kw_only=True)
class PhaseTally:
    """Outcomes of the attempts that finished inside the measured window."""

    latencies: list[float] = field(default_factory=list)
    refused: int = 0
    errors: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class PhaseResult:
    """What one timed phase measured."""

    phase: str
    round: int
    per_second: float
    p50_ms: float
    p99_ms: float
    completed: int
    refused: int
    errors: int
    failures: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ServerFacts:
    """The server settings that bound a commit-heavy workload."""

    kind: str
    version: str
    fsync: str
    synchronous_commit: str


@dataclass(frozen=True, kw_only=True)
class BenchReport:
    """Every figure of a run, as printed and as written to --json."""

    server: ServerFacts
    plan: BenchPlan
    baseline: PhaseResult
    phases: tuple[PhaseResult, ...]
    hot_per_second: float
    spread_per_second: float
    hot_over_spread: float
    target_ratio: float = TARGET_RATIO


def parse_plan(argv: Sequence[str] | None = None) -> BenchPlan:
    """The benchmark plan from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, default=16, help="workers and pool size")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="hot+spread pairs, interleaved")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("concurrency and rounds must be >= 1, seconds > 0, warmup >= 0")
    return BenchPlan(
        concurrency=args.concurrency,
        seconds=args.seconds,
        warmup=args.warmup,
        rounds=args.rounds,
        json_path=args.json,
    )


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@asynccontextmanager
async def postgres_server(settings: BenchSettings) -> AsyncIterator[tuple[str, str]]:
    """The server to benchmark on and its kind: DATABASE_URL's, else an embedded one."""
    if settings.database_url:
        yield settings.database_url, "DATABASE_URL"
        return
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as scratch:
        async with running_postgres(Path(scratch) / "pgdata") as url:
            yield url, "embedded"


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A database of the benchmark's own on the server, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(server_url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def migrate_inventory(database_url: str) -> None:
    """Bring the inventory schema to head (alembic blocks, so off the event loop)."""
    await asyncio.to_thread(upgrade, database_url, discover_services()["inventory"])


async def server_facts(engine: AsyncEngine, kind: str) -> ServerFacts:
    """The server's version and durability settings."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT current_setting('server_version'), current_setting('fsync'),"
                    " current_setting('synchronous_commit')"
                )
            )
        ).one()
    return ServerFacts(kind=kind, version=row[0], fsync=row[1], synchronous_commit=row[2])


async def stock_catalogue(uow_factory: UnitOfWorkFactory, *, concurrency: int) -> None:
    """Put plenty of units on hand for the hot SKU and every spread SKU."""
    gate = asyncio.Semaphore(concurrency)

    async def stock_one(sku: str) -> None:
        async with gate:
            await set_stock(SetStock(sku=sku, on_hand=UNITS_ON_HAND), InventoryDeps(uow_factory))

    async with asyncio.TaskGroup() as stocking:
        for sku in (HOT_SKU, *SPREAD_SKUS):
            stocking.create_task(stock_one(sku))


async def reserve_one_unit(sku: str, uow_factory: UnitOfWorkFactory) -> None:
    """Reserve one unit of the SKU for a new order."""
    command = ReserveStock(order_id=new_id(), lines=(ReservationLine(sku, 1),), ttl=RESERVATION_TTL)
    await reserve_stock(command, InventoryDeps(uow_factory))


async def trivial_transaction(uow_factory: UnitOfWorkFactory) -> None:
    """Begin, SELECT 1, commit: the floor any reservation pays on this machine and pool."""
    async with uow_factory() as uow:
        await uow.session.execute(text("SELECT 1"))


def hot_reservations(uow_factory: UnitOfWorkFactory) -> Attempt:
    """Every attempt reserves the hot SKU."""

    async def attempt() -> None:
        await reserve_one_unit(HOT_SKU, uow_factory)

    return attempt


def spread_reservations(uow_factory: UnitOfWorkFactory, picker: random.Random) -> Attempt:
    """Every attempt reserves a SKU picked at random from the spread catalogue."""

    async def attempt() -> None:
        await reserve_one_unit(picker.choice(SPREAD_SKUS), uow_factory)

    return attempt


def baseline_transactions(uow_factory: UnitOfWorkFactory) -> Attempt:
    """Every attempt is a trivial transaction."""

    async def attempt() -> None:
        await trivial_transaction(uow_factory)

    return attempt


async def keep_attempting(attempt: Attempt, window: MeasuredWindow, tally: PhaseTally) -> None:
    """One worker: attempt back to back until the window ends, tallying what finished in it."""
    while (started := time.perf_counter()) < window.ends:
        failure: str | None = None
        refused = False
        try:
            await attempt()
        except DomainError as error:
            refused, failure = True, f"{type(error).__name__}: {error}"
        except Exception as error:
            failure = f"{type(error).__name__}: {error}"
        finished = time.perf_counter()
        if not window.starts <= finished < window.ends:
            continue
        if failure is None:
            tally.latencies.append(finished - started)
            continue
        tally.refused += refused
        tally.errors += not refused
        if len(tally.failures) < 3:
            tally.failures.append(failure[:200])


async def run_phase(
    phase: str, round_number: int, attempt: Attempt, plan: BenchPlan
) -> PhaseResult:
    """Drive `attempt` from every worker through a warm-up and a measured window."""
    now = time.perf_counter()
    window = MeasuredWindow(starts=now + plan.warmup, ends=now + plan.warmup + plan.seconds)
    tally = PhaseTally()
    async with asyncio.TaskGroup() as workers:
        for _ in range(plan.concurrency):
            workers.create_task(keep_attempting(attempt, window, tally))
    return summarise(phase, round_number, tally, plan.seconds)


def percentile_ms(latencies: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of latencies in seconds, in milliseconds (0 when empty)."""
    if not latencies:
        return 0.0
    ordered = sorted(latencies)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[rank] * 1_000


def summarise(phase: str, round_number: int, tally: PhaseTally, seconds: float) -> PhaseResult:
    """The phase's rate and latencies from its tally."""
    return PhaseResult(
        phase=phase,
        round=round_number,
        per_second=len(tally.latencies) / seconds,
        p50_ms=percentile_ms(tally.latencies, 0.50),
        p99_ms=percentile_ms(tally.latencies, 0.99),
        completed=len(tally.latencies),
        refused=tally.refused,
        errors=tally.errors,
        failures=tuple(tally.failures),
    )


def median_rate(phases: Sequence[PhaseResult], phase: str) -> float:
    """The median per-second rate over the rounds of one phase."""
    return statistics.median(result.per_second for result in phases if result.phase == phase)


async def run_rounds(uow_factory: UnitOfWorkFactory, plan: BenchPlan) -> list[PhaseResult]:
    """Hot and spread phases, interleaved, `rounds` times."""
    hot = hot_reservations(uow_factory)
    spread = spread_reservations(uow_factory, random.Random())
    phases: list[PhaseResult] = []
    line = ProgressLine("reservation phases", 2 * plan.rounds)
    for round_number in range(1, plan.rounds + 1):
        phases.append(await run_phase("hot", round_number, hot, plan))
        line.update(len(phases))
        phases.append(await run_phase("spread", round_number, spread, plan))
        line.update(len(phases))
    return phases


async def measure(database_url: str, kind: str, plan: BenchPlan) -> BenchReport:
    """Migrate, stock the catalogue, then time the baseline and the interleaved phases."""
    await migrate_inventory(database_url)
    engine = create_engine(
        ServiceSettings(
            service_name="bench", database_url=database_url, db_pool_size=plan.concurrency
        )
    )
    try:
        uow_factory = unit_of_work_factory(
            engine, OutboxWriter(tables.outbox, producer="inventory"), kind=InventoryUnitOfWork
        )
        facts = await server_facts(engine, kind)
        await stock_catalogue(uow_factory, concurrency=plan.concurrency)
        baseline = await run_phase("baseline", 0, baseline_transactions(uow_factory), plan)
        phases = await run_rounds(uow_factory, plan)
    finally:
        await engine.dispose()
    hot, spread = median_rate(phases, "hot"), median_rate(phases, "spread")
    return BenchReport(
        server=facts,
        plan=plan,
        baseline=baseline,
        phases=tuple(phases),
        hot_per_second=hot,
        spread_per_second=spread,
        hot_over_spread=hot / spread if spread else 0.0,
    )


def report_lines(report: BenchReport) -> list[str]:
    """The table and the one-line verdict."""
    facts, plan = report.server, report.plan
    lines = [
        f"server: PostgreSQL {facts.version} ({facts.kind}); fsync={facts.fsync}, "
        f"synchronous_commit={facts.synchronous_commit}",
        f"{'phase':<9}{'round':>6}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'refused':>9}{'errors':>8}",
    ]
    for result in (report.baseline, *report.phases):
        lines.append(
            f"{result.phase:<9}{result.round or '-':>6}{result.per_second:>10.0f}"
            f"{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}{result.refused:>9}{result.errors:>8}"
        )
        lines.extend(f"  {result.phase} failure: {failure}" for failure in result.failures)
    lines.append(
        f"hot/spread = {report.hot_over_spread:.2f} (hot {report.hot_per_second:.0f}/s, "
        f"spread {report.spread_per_second:.0f}/s; concurrency {plan.concurrency}, "
        f"{plan.rounds} rounds of {plan.seconds:g}s)"
    )
    return lines


def report_json(report: BenchReport) -> str:
    """The report's figures as JSON."""
    figures: dict[str, Any] = asdict(report)
    figures["plan"]["json_path"] = str(report.plan.json_path) if report.plan.json_path else None
    return json.dumps(figures, indent=2)


async def bench(plan: BenchPlan, settings: BenchSettings) -> BenchReport:
    """Run the whole benchmark on a fresh database and return its figures."""
    async with (
        postgres_server(settings) as (server_url, kind),
        fresh_database(server_url) as database_url,
    ):
        return await measure(database_url, kind, plan)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the benchmark on uvloop, print it, and write JSON if asked."""
    plan = parse_plan(argv)
    report = uvloop.run(bench(plan, BenchSettings()))
    print("\n".join(report_lines(report)))
    if plan.json_path is not None:
        plan.json_path.write_text(report_json(report) + "\n")


if __name__ == "__main__":
    main()
