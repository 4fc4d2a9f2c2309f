"""`python -m verification.drill_zone` (`make drill-zone`): lose a whole zone under checkout load.

The stack runs with two replicas of every service, worker and gateway (zone-a and zone-b). The
chaos harness's customers check out through the gateway; then every process of one zone is
SIGKILLed at once and, the supervisor told to hold that zone down, kept down for a while; then
the zone is released and comes back (with `--after-seconds 0`, the short run, the load ends at
the release and the zone comes back while the orders settle). The report gives the error rate
clients saw and the orders accepted per second before, during and after the loss, and every
invariant of verification.invariants; the exit code is 1 on any violation (or a zone that was
not kept down), 2 when the drill itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx

from local_supervisor.launcher import LaunchedStack
from local_supervisor.readiness import GrpcHealthCheck, ReadinessProber
from local_supervisor.stack import STACK, role_of, zone_name
from verification import collect, customers
from verification.chaos import client_records
from verification.invariants import InvariantResult, Verdict, check_all
from verification.plan import CheckoutPlan, make_plan
from verification.progress import ProgressLine
from verification.report import invariant_lines, outcomes, verdict
from verification.snapshot import CONFIRMED_STATUSES, Snapshot
from verification.stack import ChaosStack, fresh_database, running_stack

log = logging.getLogger("verification.drill_zone")
EXIT_VIOLATION = 1
EXIT_HARNESS_ERROR = 2
REPLICAS = 2  # zone-a and zone-b
# The phases of the load, in order: before the loss, the zone down, the zone coming back
# (released until every process of it is up and SERVING), and after.
BEFORE, DOWN, RETURNING, AFTER = "before", "zone down", "returning", "after"
PHASES = (BEFORE, DOWN, RETURNING, AFTER)
TIMEOUT, CONNECTION_ERROR = "timeout", "connection error"  # as customers.Traffic counts them
GRPC_ROLES = frozenset(entry.name for entry in STACK if entry.port_offset is not None)
WATCH_SECONDS = 0.25  # how often the drill looks whether the lost zone stayed down
COMEBACK_WITHIN = 120.0  # seconds the released zone gets to be SERVING again
# Customers planned per customer-second of the load (a checkout with its storm, replay and
# cancel takes a customer seconds): enough that the plan never runs out before the load ends.
PLANNED_PER_SECOND = 1.0


@dataclass(frozen=True, kw_only=True)
class DrillOptions:
    """One drill's knobs."""

    seed: int
    zone: str  # the zone lost
    before_seconds: float
    down_seconds: float
    after_seconds: float
    concurrency: int
    settle_within: float
    data_dir: Path
    database_server: str | None  # None: an embedded PostgreSQL for the drill


def parse_options(argv: Sequence[str]) -> DrillOptions:
    """The command line (DATABASE_URL names a server to create the drill's database on)."""
    parser = argparse.ArgumentParser(prog="python -m verification.drill_zone", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="the customers' plan (random)")
    parser.add_argument(
        "--zone",
        choices=[zone_name(i) for i in range(REPLICAS)],
        default=zone_name(0),
        help="the zone lost (default: %(default)s)",
    )
    parser.add_argument("--before-seconds", type=float, default=60.0, help="load before the loss")
    parser.add_argument("--down-seconds", type=float, default=60.0, help="the zone kept down")
    parser.add_argument(
        "--after-seconds", type=float, default=60.0, help="load once the zone is back"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="customers at once")
    parser.add_argument(
        "--settle-within", type=float, default=300.0, help="seconds for orders to settle"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="logs and embedded data")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="drill-zone-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    return DrillOptions(
        seed=args.seed if args.seed is not None else secrets.randbelow(2**31),
        zone=args.zone,
        before_seconds=args.before_seconds,
        down_seconds=args.down_seconds,
        after_seconds=args.after_seconds,
        concurrency=args.concurrency,
        settle_within=args.settle_within,
        data_dir=data_dir.resolve(),
        database_server=os.environ.get("DATABASE_URL") or None,
    )


def replay_command(options: DrillOptions) -> str:
    """The command that runs this drill again."""
    return (
        f"python -m verification.drill_zone --seed {options.seed} --zone {options.zone} "
        f"--before-seconds {options.before_seconds:g} --down-seconds {options.down_seconds:g} "
        f"--after-seconds {options.after_seconds:g} --concurrency {options.concurrency}"
    )


@dataclass
class PhasedTraffic(customers.Traffic):
    """The customers' answers, counted by kind overall and in the phase they came in."""

    phase: str = BEFORE
    by_phase: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def saw(self, kind: str) -> None:
        """Count one answer, in the current phase too."""
        super().saw(kind)
        self.by_phase[self.phase][kind] += 1

    def failures(self, phase: str) -> tuple[int, int, int]:
        """(5xx answers, connection errors, timeouts) of the requests of `phase`."""
        answers = self.by_phase[phase]
        server_errors = sum(n for kind, n in answers.items() if kind.startswith("5"))
        return server_errors, answers[CONNECTION_ERROR], answers[TIMEOUT]


@dataclass
class ZoneLoss:
    """What happened to the lost zone, and when each phase began (wall clock)."""

    zone: str
    starts: dict[str, float] = field(default_factory=dict)  # phase -> time.time()
    ended_at: float = 0.0  # the load's end
    back_at: float = 0.0  # every process of the zone running again, its gRPC ones SERVING
    killed: list[tuple[str, int]] = field(default_factory=list)  # (process, pid)
    came_back_early: set[str] = field(default_factory=set)  # restarted while held down
    plan_ran_out_at: float | None = None  # every planned customer started before the end

    def bounds(self) -> Iterator[tuple[str, float, float]]:
        """(phase, start, end) of each phase that began, in order."""
        begun = [phase for phase in PHASES if phase in self.starts]
        ends = [self.starts[phase] for phase in begun[1:]] + [self.ended_at]
        yield from ((p, self.starts[p], end) for p, end in zip(begun, ends, strict=True))


def kill_zone(launched: LaunchedStack, zone: str) -> list[tuple[str, int]]:
    """SIGKILL every running process of `zone` at once, once the supervisor holds it down."""
    launched.hold_zone(zone)
    running = {name: pid for name, pid in launched.zone_processes(zone).items() if pid}
    for pid in running.values():
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return sorted(running.items())


async def keep_down(launched: LaunchedStack, loss: ZoneLoss, seconds: float) -> None:
    """Keep the zone down for `seconds`, noting any of its processes that runs meanwhile (with
    a pid other than the one killed: the state file may still show that one for a moment)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    killed = dict(loss.killed)
    while loop.time() < until:
        running = launched.zone_processes(loss.zone).items()
        loss.came_back_early |= {n for n, pid in running if pid and pid != killed.get(n)}
        await asyncio.sleep(WATCH_SECONDS)


async def wait_back(launched: LaunchedStack, zone: str) -> float:
    """Once every process of `zone` runs again and its gRPC replicas are SERVING: when."""
    prober = ReadinessProber()
    try:
        async with asyncio.timeout(COMEBACK_WITHIN):
            while True:
                states = [state for state in launched.states() if state.zone == zone]
                checks = [GrpcHealthCheck(s.address) for s in states
                          if s.pid and s.address and role_of(s.name) in GRPC_ROLES]  # fmt: skip
                answers = await asyncio.gather(*(prober.check(check) for check in checks))
                if all(s.pid for s in states) and all(a.ready for a in answers):
                    return time.time()
                await asyncio.sleep(0.2)
    finally:
        await prober.close()


async def lose_a_zone(
    launched: LaunchedStack, options: DrillOptions, traffic: PhasedTraffic, loss: ZoneLoss
) -> asyncio.Task[float]:
    """The drill's timeline: load, the zone killed and held down, released, back, load; the
    wait for the zone to be back. With no load after it (after_seconds 0) the load ends at the
    release, and the zone comes back while the orders settle."""
    loss.starts[BEFORE] = time.time()
    await asyncio.sleep(options.before_seconds)
    traffic.phase = DOWN
    loss.starts[DOWN] = time.time()
    loss.killed = kill_zone(launched, options.zone)
    log.info("%s lost: SIGKILLed %d processes", options.zone, len(loss.killed))
    await keep_down(launched, loss, options.down_seconds)
    traffic.phase = RETURNING
    loss.starts[RETURNING] = time.time()
    launched.release_zone(options.zone)
    comeback = asyncio.create_task(wait_back(launched, options.zone))
    if options.after_seconds > 0:
        await comeback
        log.info("%s back after %.1fs", options.zone, comeback.result() - loss.starts[RETURNING])
        traffic.phase = AFTER
        loss.starts[AFTER] = time.time()
        await asyncio.sleep(options.after_seconds)
    loss.ended_at = time.time()
    return comeback


async def drive_load(
    stack: ChaosStack, options: DrillOptions, plans: Sequence[CheckoutPlan], loss: ZoneLoss,
    traffic: PhasedTraffic, prices: dict[str, int], stock: dict[str, int],
) -> tuple[list[customers.CheckoutResult], asyncio.Task[float]]:  # fmt: skip
    """`concurrency` customers checking out one after the other while the zone is lost; the
    wait for the zone to be back (lose_a_zone)."""
    assert stack.launched is not None
    queue = list(reversed(plans))
    results: list[customers.CheckoutResult] = []
    limits = httpx.Limits(max_connections=options.concurrency * 5)
    async with httpx.AsyncClient(base_url=stack.url("gateway"), limits=limits) as gateway:
        await customers.stock_catalog(gateway, traffic, prices=prices, initial_stock=stock)
        timeline = asyncio.create_task(lose_a_zone(stack.launched, options, traffic, loss))
        # The load ends with the zone's timeline, usually before the plan runs out.
        line = ProgressLine("checkouts (of the plan)", len(plans))

        async def customer() -> None:
            while queue and not timeline.done():
                results.append(await customers.check_out(gateway, traffic, queue.pop()))
                line.update(len(results))
            if not queue and not timeline.done() and loss.plan_ran_out_at is None:
                loss.plan_ran_out_at = time.time()

        await asyncio.gather(timeline, *(customer() for _ in range(options.concurrency)))
        line.finish()
    return results, timeline.result()


@dataclass(frozen=True, kw_only=True)
class PhaseFigures:
    """One phase: its length, the orders placed in it and how many were confirmed, and how the
    clients' requests of it went."""

    phase: str
    seconds: float
    orders: int
    confirmed: int
    requests: int
    server_errors: int  # 5xx answers (the gateway sheds with 503, an upstream it lost is 503)
    connection_errors: int  # refused or reset connections (a gateway that died)
    timeouts: int  # no answer within the client's patience (some customers allow 0.25 s)

    @property
    def orders_per_second(self) -> float:
        """Orders accepted per second of the phase."""
        return self.orders / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> int:
        """The requests that failed: 5xx, connection errors and timeouts."""
        return self.server_errors + self.connection_errors + self.timeouts

    @property
    def error_rate(self) -> float:
        """The share of the clients' requests that failed."""
        return self.failed / self.requests if self.requests else 0.0


async def phase_figures(
    database_url: str, scope: collect.Scope, loss: ZoneLoss, traffic: PhasedTraffic
) -> list[PhaseFigures]:
    """Each phase's figures: orders by when checkout created them, answers by when they came."""
    db = await asyncpg.connect(database_url)
    try:
        rows = await db.fetch(
            "SELECT extract(epoch FROM created_at) AS at, status FROM checkout.orders"
            " WHERE customer_id LIKE $1",
            scope.customer_prefix + "%",
        )
    finally:
        await db.close()
    figures = []
    for phase, start, end in loss.bounds():
        placed = [r for r in rows if start <= float(r["at"]) < end]
        server_errors, connection_errors, timeouts = traffic.failures(phase)
        figures.append(
            PhaseFigures(
                phase=phase,
                seconds=end - start,
                orders=len(placed),
                confirmed=sum(r["status"] in CONFIRMED_STATUSES for r in placed),
                requests=sum(traffic.by_phase[phase].values()),
                server_errors=server_errors,
                connection_errors=connection_errors,
                timeouts=timeouts,
            )
        )
    return figures


def render(
    options: DrillOptions,
    loss: ZoneLoss,
    figures: Sequence[PhaseFigures],
    snapshot: Snapshot,
    traffic: PhasedTraffic,
    results: Sequence[InvariantResult],
) -> str:
    """The drill's report: the loss, each phase's throughput and errors, every invariant."""
    killed = ", ".join(name for name, _ in loss.killed)
    kept = "yes" if not loss.came_back_early else f"NO, restarted: {sorted(loss.came_back_early)}"
    out = [
        f"zone drill, seed {options.seed}  (run again: {replay_command(options)})",
        f"data and logs: {options.data_dir}",
        "",
        f"{loss.zone} lost: {len(loss.killed)} processes SIGKILLed at once: {killed}",
        f"  kept down by the supervisor for {options.down_seconds:g}s: {kept}",
        f"  back {loss.back_at - loss.starts[RETURNING]:.1f}s after its release (every process "
        "running, the gRPC ones SERVING)",
        f"customers: {len(snapshot.client_checkouts)} checked out"
        + (
            f" (every planned one: the plan ran out {loss.ended_at - loss.plan_ran_out_at:.0f}s"
            " before the end, so the last figures undercount)"
            if loss.plan_ran_out_at is not None
            else ""
        ),
        f"orders: {len(snapshot.orders)}",
        *(f"  {n:6d}  {label}" for label, n in sorted(outcomes(snapshot).items())),
        "",
        "phase       seconds  orders  orders/s  confirmed  requests  5xx  conn  timeouts  "
        "error rate",
    ]
    out += [
        f"{f.phase:<10} {f.seconds:8.1f} {f.orders:7d} {f.orders_per_second:9.2f} "
        f"{f.confirmed:10d} {f.requests:9d} {f.server_errors:4d} {f.connection_errors:5d} "
        f"{f.timeouts:9d} {f.error_rate:11.2%}"
        for f in figures
    ]
    out.append(f"client gave up: {len(traffic.abandoned)}")
    out += [f"  {line}" for line in traffic.abandoned[:5]]
    out += ["", *invariant_lines(results), ""]
    failed = any(r.verdict is Verdict.FAIL for r in results) or bool(loss.came_back_early)
    zone = "NOT kept down" if loss.came_back_early else "kept down, then back"
    out.append(
        f"result: {'FAIL' if failed else 'PASS'}: invariants {verdict(results)}; {loss.zone} {zone}"
    )
    return "\n".join(out)


async def run(options: DrillOptions) -> int:
    """One drill; the exit code."""
    seconds = options.before_seconds + options.down_seconds + options.after_seconds
    planned = int(options.concurrency * (seconds + COMEBACK_WITHIN / 2) * PLANNED_PER_SECOND)
    plan = make_plan(
        seed=options.seed, checkouts=planned, kills=0,
        kill_targets=[], redis_restarts=0, outage_seconds=0, poison_queues=(),
    )  # fmt: skip
    scope = collect.Scope(f"chaos-{plan.run_id}-", tuple(plan.initial_stock))
    traffic = PhasedTraffic()
    loss = ZoneLoss(options.zone)
    async with (
        fresh_database(options.database_server, options.data_dir) as database_url,
        running_stack(
            database_url=database_url,
            data_dir=options.data_dir,
            rng=random.Random(options.seed),
            replicas=REPLICAS,
        ) as stack,
    ):
        log.info("stack SERVING in %d zones; losing %s", REPLICAS, options.zone)
        started = time.monotonic()
        results, comeback = await drive_load(
            stack, options, plan.checkouts, loss, traffic, plan.prices, plan.initial_stock
        )
        load_seconds = time.monotonic() - started
        waited, unsettled = await collect.settle(
            stack, scope, within=options.settle_within, pipeline=True
        )
        log.info("settled in %.0fs (%d orders unsettled)", waited, unsettled)
        figures = await phase_figures(database_url, scope, loss, traffic)
        async with httpx.AsyncClient(base_url=stack.url("psp")) as psp:
            snapshot, _ = await collect.take_snapshot(
                stack, psp, scope, initial_stock=plan.initial_stock,
                clients=client_records(results),
                settle_seconds=options.settle_within if unsettled else waited,
            )  # fmt: skip
        loss.back_at = await comeback
    log.info("load %.0fs, settled in %.0fs", load_seconds, waited)
    checked = check_all(snapshot)
    print(render(options, loss, figures, snapshot, traffic, checked), flush=True)
    failed = any(r.verdict is Verdict.FAIL for r in checked) or bool(loss.came_back_early)
    return EXIT_VIOLATION if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, print the command, run; 0 when every invariant holds and the zone stayed down."""
    logging.basicConfig(
        level=logging.WARNING, format="drill-zone | %(message)s", stream=sys.stderr, force=True
    )
    logging.getLogger("verification").setLevel(logging.INFO)
    options = parse_options(sys.argv[1:] if argv is None else argv)
    print(f"zone drill; run again with: {replay_command(options)}", flush=True)
    try:
        return asyncio.run(run(options))
    except Exception:
        log.exception("the zone drill could not complete (seed %d)", options.seed)
        return EXIT_HARNESS_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
