"""`python -m verification.drill_db` (`make drill-db`): the database writer fails over under load.

A primary with a streaming synchronous standby (verification.replica), the whole stack on the
endpoint that follows the writer (both hosts, `target_session_attrs=read-write`), checkout load
through the gateway (the chaos harness's customers: retry storms, replays, cancels); at a share
of the load the primary is SIGKILLed (postmaster and backends at once), and after a short delay
the standby is promoted (`pg_ctl promote`) while the clients keep retrying with their
idempotency keys. With `--no-standby` the only server is SIGKILLed and started again on its
data (crash recovery). Then:

- nothing acknowledged is lost: every order a client was answered 2xx for is in the database
  once it takes writes again, and at the end;
- every invariant holds after the clients' retries (verification.invariants);
- every gRPC service went NOT_SERVING without a writer and is SERVING again;
- the time without a writer is measured: kill to the first write, to the first checkout
  answered, to the first order placed after the kill that is CONFIRMED.

`--asynchronous` makes the standby asynchronous (as a Region's replica is): acknowledged
orders missing after the promotion are then measured (RPO), not a violation. Exits 1 on any
violation, 2 when the drill itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from verification import collect, customers
from verification.chaos import client_records
from verification.faults import Progress
from verification.invariants import InvariantResult, Verdict, check_all
from verification.plan import CheckoutPlan, make_plan
from verification.replica import ReplicaPair, replica_pair
from verification.report import figures_table, invariant_lines, outcomes, verdict
from verification.snapshot import CONFIRMED_STATUSES, Snapshot
from verification.stack import ChaosStack, running_stack

log = logging.getLogger("verification.drill_db")
EXIT_VIOLATION = 1
EXIT_HARNESS_ERROR = 2
DATABASE = "marketplace"
GRPC_SERVICES = ("cart", "inventory", "payment", "checkout")
HEALTH_NAMES = {
    "cart": "marketplace.cart.v1.CartService",
    "inventory": "marketplace.inventory.v1.InventoryService",
    "payment": "marketplace.payment.v1.PaymentService",
    "checkout": "marketplace.checkout.v1.CheckoutService",
}
# Every process of the stack probes its writer this often (default 2 s), so a failover of a
# couple of seconds shows in health; set in the environment the supervisor passes on.
STACK_HEALTH_ENV = {"HEALTH_PROBE_INTERVAL_SECONDS": "0.5", "HEALTH_PROBE_TIMEOUT_SECONDS": "1"}
POLL_SECONDS = 0.05
RECOVERY_WITHIN = 120.0  # seconds the writer, a write and each service get to come back
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True, kw_only=True)
class DrillOptions:
    """One drill's knobs."""

    seed: int
    checkouts: int
    concurrency: int
    kill_at: float  # share of the checkouts finished when the writer is killed
    promote_after: float  # seconds between the kill and the promotion (or restart)
    standby: bool
    synchronous: bool
    settle_within: float
    data_dir: Path
    bin_dir: Path | None


def parse_options(argv: Sequence[str]) -> DrillOptions:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m verification.drill_db",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument("--checkouts", type=int, default=400, help="customers (default 400)")
    parser.add_argument("--concurrency", type=int, default=16, help="customers at once")
    parser.add_argument(
        "--kill-at",
        type=float,
        default=0.4,
        help="share of the load done when the primary is killed (default 0.4)",
    )
    parser.add_argument(
        "--promote-after",
        type=float,
        default=2.0,
        help="seconds from the kill to the promotion or restart (default 2)",
    )
    parser.add_argument(
        "--no-standby",
        action="store_true",
        help="one server, killed and restarted (crash recovery)",
    )
    parser.add_argument(
        "--asynchronous",
        action="store_true",
        help="an asynchronous standby: acknowledged losses are measured",
    )
    parser.add_argument(
        "--settle-within",
        type=float,
        default=180.0,
        help="seconds for orders to settle after the load",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="logs (default: a temp dir)")
    parser.add_argument(
        "--bin-dir",
        type=Path,
        default=None,
        help="PostgreSQL binaries (default: the embedded server's)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.no_standby and args.asynchronous:
        parser.error("--asynchronous needs a standby")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="drill-db-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    return DrillOptions(
        seed=args.seed if args.seed is not None else secrets.randbelow(2**31),
        checkouts=args.checkouts,
        concurrency=args.concurrency,
        kill_at=args.kill_at,
        promote_after=args.promote_after,
        standby=not args.no_standby,
        synchronous=not args.asynchronous,
        settle_within=args.settle_within,
        data_dir=data_dir.resolve(),
        bin_dir=args.bin_dir,
    )


def replay_command(options: DrillOptions) -> str:
    """The command that runs this drill again."""
    mode = " --no-standby" if not options.standby else ""
    mode += " --asynchronous" if not options.synchronous else ""
    return (
        f"python -m verification.drill_db --seed {options.seed} --checkouts {options.checkouts} "
        f"--concurrency {options.concurrency} --kill-at {options.kill_at:g} "
        f"--promote-after {options.promote_after:g}{mode}"
    )


def _is_checkout(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path == "/v1/checkouts"


class Acknowledgements:
    """Every order a client was answered 2xx for (a new checkout or a replay), with when it
    was first answered, and how long each idempotency key waited from its first request to
    its first 2xx; httpx request and response hooks on the gateway client."""

    def __init__(self) -> None:
        self.orders: dict[str, float] = {}  # order id -> monotonic time of its first 2xx
        self._first_sent: dict[str, float] = {}  # idempotency key -> its first request
        self.waits: dict[str, float] = {}  # idempotency key -> first request to first 2xx

    async def on_request(self, request: httpx.Request) -> None:
        """Note when a checkout's key was first sent."""
        if _is_checkout(request):
            key = request.headers.get("Idempotency-Key", "")
            self._first_sent.setdefault(key, time.monotonic())

    async def on_response(self, response: httpx.Response) -> None:
        """Record the order of a successful POST /v1/checkouts."""
        request = response.request
        if not _is_checkout(request) or not response.is_success:
            return
        await response.aread()
        now = time.monotonic()
        self.orders.setdefault(str(response.json()["order_id"]), now)
        key = request.headers.get("Idempotency-Key", "")
        self.waits.setdefault(key, now - self._first_sent.get(key, now))

    def before(self, moment: float) -> set[str]:
        """The orders acknowledged before `moment`."""
        return {order for order, at in self.orders.items() if at < moment}

    def first_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first acknowledgement after it, if any."""
        later = [at for at in self.orders.values() if at >= moment]
        return min(later) - moment if later else None


@dataclass
class HealthTrace:
    """One gRPC service's health from the kill on, in seconds after the kill (None: unseen)."""

    service: str
    not_serving_at: float | None = None
    serving_again_at: float | None = None


@dataclass
class Timeline:
    """The failover as it happened, in seconds after the kill (None: did not happen)."""

    acknowledged_before: set[str] = field(default_factory=set)
    killed_at: float = 0.0  # monotonic
    killed_wall: float = 0.0  # time.time(), against the database's timestamps
    writer_back: float | None = None  # promotion (or restart) done
    first_write: float | None = None
    first_confirmed: float | None = None
    lost_when_back: list[str] = field(default_factory=list)  # acknowledged before, missing
    health: list[HealthTrace] = field(default_factory=list)


async def _first_write(url: str) -> None:
    """Return once a write through the writer endpoint commits."""
    while True:
        try:
            connection = await asyncpg.connect(url, timeout=1)
            try:
                await connection.execute("INSERT INTO drill_heartbeat DEFAULT VALUES")
                return
            finally:
                await connection.close()
        except _DB_ERRORS:
            await asyncio.sleep(POLL_SECONDS)


async def missing(url: str, order_ids: set[str]) -> list[str]:
    """Those of `order_ids` that checkout does not have."""
    connection = await asyncpg.connect(url, timeout=5)
    try:
        rows = await connection.fetch(
            "SELECT order_id::text AS id FROM checkout.orders WHERE order_id = ANY($1::uuid[])",
            list(order_ids),
        )
    finally:
        await connection.close()
    return sorted(order_ids - {row["id"] for row in rows})


async def _first_confirmed_after(url: str, prefix: str, wall: float) -> None:
    """Return once an order of the run placed after `wall` (epoch seconds) is confirmed."""
    connection = await asyncpg.connect(url, timeout=5)
    try:
        while True:
            found = await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM checkout.orders WHERE customer_id LIKE $1"
                " AND created_at > to_timestamp($2) AND status = ANY($3::text[]))",
                prefix + "%", wall, sorted(CONFIRMED_STATUSES),
            )  # fmt: skip
            if found:
                return
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def _watch_health(
    stack: ChaosStack, trace: HealthTrace, since: float, written: asyncio.Event
) -> None:
    """Follow one service's health until it is SERVING again after it said NOT_SERVING, or
    (a service that never did) until it is SERVING once a write went through."""
    async with grpc.aio.insecure_channel(stack.grpc_address(trace.service)) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=HEALTH_NAMES[trace.service])
        while trace.serving_again_at is None:
            try:
                status = (await stub.Check(request, timeout=1)).status
            except grpc.aio.AioRpcError:
                status = None
            now = time.monotonic() - since
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                trace.not_serving_at = trace.not_serving_at or now
            elif status == health_pb2.HealthCheckResponse.SERVING:
                if trace.not_serving_at is not None:
                    trace.serving_again_at = now
                elif written.is_set():
                    return
            await asyncio.sleep(POLL_SECONDS)


async def take_the_writer_away(
    pair: ReplicaPair,
    stack: ChaosStack,
    options: DrillOptions,
    progress: Progress,
    acks: Acknowledgements,
    timeline: Timeline,
    customer_prefix: str,
) -> None:
    """At the planned share of the load: SIGKILL the primary, wait, promote the standby (or
    start the only server again), and time the way back to a writer."""
    await progress.reach(options.kill_at)
    pair.primary.kill()
    timeline.killed_at, timeline.killed_wall = time.monotonic(), time.time()
    timeline.acknowledged_before = acks.before(timeline.killed_at)
    log.info("primary SIGKILLed at %.0f%% of the load (%d orders acknowledged)",
             progress.share * 100, len(timeline.acknowledged_before))  # fmt: skip
    timeline.health = [HealthTrace(name) for name in GRPC_SERVICES]
    written = asyncio.Event()
    watchers = [
        asyncio.create_task(_watch_health(stack, trace, timeline.killed_at, written))
        for trace in timeline.health
    ]
    await asyncio.sleep(options.promote_after)
    if pair.standby is not None:
        await pair.standby.promote()
        what = "standby promoted"
    else:
        await pair.primary.start()
        what = "server restarted (crash recovery)"
    timeline.writer_back = time.monotonic() - timeline.killed_at
    log.info("%s %.1fs after the kill", what, timeline.writer_back)
    async with asyncio.timeout(RECOVERY_WITHIN):
        await _first_write(pair.writer_url("postgres"))
        timeline.first_write = time.monotonic() - timeline.killed_at
        written.set()
        timeline.lost_when_back = await missing(stack.database_url, timeline.acknowledged_before)
        await _first_confirmed_after(stack.database_url, customer_prefix, timeline.killed_wall)
        timeline.first_confirmed = time.monotonic() - timeline.killed_at
        await asyncio.wait(watchers, timeout=RECOVERY_WITHIN)
    for watcher in watchers:
        watcher.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)


async def drive_load(
    pair: ReplicaPair,
    stack: ChaosStack,
    options: DrillOptions,
    plan_checkouts: Sequence[CheckoutPlan],
    catalog: tuple[dict[str, int], dict[str, int]],
    traffic: customers.Traffic,
    customer_prefix: str,
) -> tuple[list[customers.CheckoutResult], Acknowledgements, Timeline, float]:
    """Every planned customer against the gateway while the writer is taken away; the
    results, the acknowledgements, the failover's timeline and the load's seconds."""
    acks = Acknowledgements()
    timeline = Timeline()
    progress = Progress(len(plan_checkouts))
    prices, initial_stock = catalog
    limits = httpx.Limits(max_connections=options.concurrency * 5)
    async with httpx.AsyncClient(
        base_url=stack.url("gateway"),
        limits=limits,
        event_hooks={"request": [acks.on_request], "response": [acks.on_response]},
    ) as gateway:
        await customers.stock_catalog(gateway, traffic, prices=prices, initial_stock=initial_stock)
        seats = asyncio.Semaphore(options.concurrency)

        async def customer(checkout: CheckoutPlan) -> customers.CheckoutResult:
            async with seats:
                result = await customers.check_out(gateway, traffic, checkout)
            await progress.advance()
            return result

        started = time.monotonic()
        failover = asyncio.create_task(
            take_the_writer_away(pair, stack, options, progress, acks, timeline, customer_prefix)
        )
        results = await asyncio.gather(*(customer(c) for c in plan_checkouts))
        load_seconds = time.monotonic() - started
        await failover
    return list(results), acks, timeline, load_seconds


@dataclass(frozen=True)
class DrillFindings:
    """The drill's own checks beside the invariants: each a list of violations."""

    lost_when_back: list[str]
    lost_at_end: list[str]
    health: list[str]

    def violations(self, *, measured_loss: bool) -> list[str]:
        """Every violation; acknowledged losses are only measured with an async standby."""
        lost = [] if measured_loss else self.lost_when_back + self.lost_at_end
        return lost + self.health


def findings(timeline: Timeline, acks: Acknowledgements, snapshot: Snapshot) -> DrillFindings:
    """What the drill checks itself: acknowledged orders kept, health down and up again."""
    stored = {order.order_id for order in snapshot.orders}
    lost_at_end = sorted(set(acks.orders) - stored)
    health = []
    for trace in timeline.health:
        if trace.not_serving_at is None:
            health.append(f"{trace.service} never said NOT_SERVING without a writer")
        elif trace.serving_again_at is None:
            health.append(f"{trace.service} was not SERVING again within {RECOVERY_WITHIN:.0f}s")
    return DrillFindings(
        lost_when_back=[f"order {o} acknowledged before the kill, missing once the writer "
                        "was back" for o in timeline.lost_when_back],
        lost_at_end=[f"order {o} acknowledged, missing at the end" for o in lost_at_end],
        health=health,
    )  # fmt: skip


def _seconds(value: float | None) -> str:
    return "not seen" if value is None else f"{value:.2f} s"


def render(
    options: DrillOptions,
    timeline: Timeline,
    acks: Acknowledgements,
    snapshot: Snapshot,
    traffic: customers.Traffic,
    load_seconds: float,
    settle_seconds: float,
    results: Sequence[InvariantResult],
    found: DrillFindings,
) -> str:
    """The drill's report: what happened, the figures table, each invariant, the verdict."""
    if options.standby:
        kind = "synchronous" if options.synchronous else "asynchronous"
        mode = f"primary SIGKILLed, {kind} standby promoted"
        back = "kill -> standby promoted (pg_ctl promote done)"
    else:
        mode = "the only server SIGKILLed and restarted (crash recovery)"
        back = "kill -> server accepting connections again"
    answers = ", ".join(f"{k} x{n}" for k, n in sorted(traffic.answers.items()))
    slowest = max(acks.waits.values(), default=None)
    rows = [
        ("checkouts planned / orders stored", f"{options.checkouts} / {len(snapshot.orders)}"),
        ("load / settle", f"{load_seconds:.1f} s / {settle_seconds:.1f} s"),
        ("killed at", f"{options.kill_at:.0%} of the load, "
                      f"{len(timeline.acknowledged_before)} orders acknowledged before"),
        (back, _seconds(timeline.writer_back)),
        ("kill -> first write (time without a writer)", _seconds(timeline.first_write)),
        ("kill -> first checkout acknowledged", _seconds(acks.first_after(timeline.killed_at))),
        ("kill -> first order placed after it CONFIRMED", _seconds(timeline.first_confirmed)),
        ("slowest checkout: first request -> 2xx", _seconds(slowest)),
        ("acknowledged orders", str(len(acks.orders))),
        ("acknowledged before the kill, missing after", str(len(timeline.lost_when_back))),
        ("acknowledged, missing at the end", str(len(found.lost_at_end))),
    ]  # fmt: skip
    rows += [
        (f"health {t.service}: NOT_SERVING / SERVING again",
         f"{_seconds(t.not_serving_at)} / {_seconds(t.serving_again_at)}")
        for t in timeline.health
    ]  # fmt: skip
    out = [
        f"drill-db, seed {options.seed}: {mode}",
        f"replay: {replay_command(options)}",
        f"data and logs: {options.data_dir}",
        "",
        *figures_table(rows),
        "",
        "orders by outcome:",
        *(f"  {n:6d}  {label}" for label, n in sorted(outcomes(snapshot).items())),
        f"client answers: {answers}",
        f"client gave up: {len(traffic.abandoned)}",
        *(f"  {line}" for line in traffic.abandoned[:5]),
        "",
        *invariant_lines(results),
    ]
    measured = not options.synchronous
    problems = found.violations(measured_loss=measured)
    out.append("drill checks:")
    out += [f"  - {p}" for p in problems] or ["  acknowledged orders kept; health down and up"]
    if measured and (found.lost_when_back or found.lost_at_end):
        out.append(f"  (asynchronous standby: {len(found.lost_when_back)} acknowledged orders "
                   "lost at the promotion, measured, not a violation)")  # fmt: skip
    failed = problems or any(r.verdict is Verdict.FAIL for r in results)
    out += ["", f"result: {'FAIL' if failed else 'PASS'}: invariants {verdict(results)}; "
                f"{len(problems)} drill violation(s) (seed {options.seed})"]  # fmt: skip
    return "\n".join(out)


async def run(options: DrillOptions) -> int:
    """One drill; the exit code."""
    plan = make_plan(
        seed=options.seed, checkouts=options.checkouts, kills=0, kill_targets=(),
        redis_restarts=0, outage_seconds=0, poison_queues=(),
    )  # fmt: skip
    prefix = f"chaos-{plan.run_id}-"
    scope = collect.Scope(prefix, tuple(plan.initial_stock))
    traffic = customers.Traffic()
    async with replica_pair(
        synchronous=options.synchronous, standby=options.standby, bin_dir=options.bin_dir
    ) as pair:
        try:
            await pair.create_database(DATABASE)
            await _create_heartbeat(pair)
            await pair.wait_replayed()
            async with running_stack(
                database_url=pair.writer_url(DATABASE),
                data_dir=options.data_dir,
                rng=random.Random(options.seed),
            ) as stack:
                log.info("stack SERVING on %s; %d checkouts", stack.database_url,
                         options.checkouts)  # fmt: skip
                results, acks, timeline, load_seconds = await drive_load(
                    pair, stack, options, plan.checkouts,
                    (plan.prices, plan.initial_stock), traffic, prefix,
                )  # fmt: skip
                processes = set(stack.processes())
                waited, unsettled = await collect.settle(
                    stack, scope, within=options.settle_within,
                    pipeline=collect.has_relay(processes),
                )  # fmt: skip
                log.info("settled in %.0fs (%d orders unsettled)", waited, unsettled)
                async with httpx.AsyncClient(base_url=stack.url("psp")) as psp:
                    snapshot, _ = await collect.take_snapshot(
                        stack, psp, scope, initial_stock=plan.initial_stock,
                        clients=client_records(results),
                        settle_seconds=options.settle_within if unsettled else waited,
                    )  # fmt: skip
        finally:
            _keep_server_logs(pair, options.data_dir)
    checked = check_all(snapshot)
    found = findings(timeline, acks, snapshot)
    print(render(options, timeline, acks, snapshot, traffic, load_seconds, waited, checked,
                 found), flush=True)  # fmt: skip
    violated = found.violations(measured_loss=not options.synchronous)
    failed = violated or any(r.verdict is Verdict.FAIL for r in checked)
    return EXIT_VIOLATION if failed else 0


async def _create_heartbeat(pair: ReplicaPair) -> None:
    """The table the writer probe inserts into (in the `postgres` database, not the stack's)."""
    connection = await asyncpg.connect(pair.primary.url())
    try:
        await connection.execute(
            "CREATE TABLE drill_heartbeat (at timestamptz NOT NULL DEFAULT now())"
        )
    finally:
        await connection.close()


def _keep_server_logs(pair: ReplicaPair, data_dir: Path) -> None:
    """Copy the servers' logs out of their temporary directory, which goes with the pair."""
    for server in pair.servers:
        with contextlib.suppress(OSError):
            shutil.copy(server.log_path, data_dir / f"postgres-{server.name}.log")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, print the figures; 0 when nothing acknowledged was lost and every check
    holds."""
    logging.basicConfig(
        level=logging.WARNING, format="drill-db | %(message)s", stream=sys.stderr, force=True
    )
    logging.getLogger("verification").setLevel(logging.INFO)
    options = parse_options(sys.argv[1:] if argv is None else argv)
    for name, value in STACK_HEALTH_ENV.items():
        os.environ.setdefault(name, value)  # the supervisor passes its environment on
    print(f"drill-db seed {options.seed}; replay with: {replay_command(options)}", flush=True)
    try:
        return asyncio.run(run(options))
    except Exception:
        log.exception("the drill could not complete (seed %d)", options.seed)
        return EXIT_HARNESS_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
