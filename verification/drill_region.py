"""`python -m verification.drill_region` (`make drill-region`): lose a whole Region under load.

Two Regions on one machine, as the platform runs on an Aurora Global Database: Region A is the
whole stack (the local supervisor: every service, worker and the gateway, its own Redis) on
database A; Region B's database is an ASYNCHRONOUS streaming standby of A (verification.
replica). The PSP simulator and the carrier's bookings are the outside world: one PSP process
for the whole drill, which both Regions call, and one bookings file.

1. Checkout load on A through A's gateway (the chaos harness's customers, idempotency keys);
   every answered checkout is recorded with the Region that answered it.
2. At a share of the load Region A is lost whole: every process of its stack and its database
   SIGKILLed at once (all frozen first). `--stall-replication S` freezes A's WAL sender S
   seconds before, so that B lags as a distant Region does.
3. RPO: the orders A acknowledged that B lacks once promoted (before any client retry), and
   B's replication lag at the kill (its last replayed commit against A's last acknowledgement).
4. B promoted, the Region fence raised to epoch 2 (marketplace_platform.fence), Region B's stack
   started on database B with REGION_EPOCH=2, and the clients cut over to B's gateway.
5. The clients retry whatever was in flight, and every checkout whose order B cannot find, with
   the SAME idempotency key (and cart; a client whose cart B lost fills a new one); the rest of
   the load runs on B.
6. B settles (sagas A left running are re-driven by B's saga engine), then reconciles with the
   PSP (ReconcilePayments, once every suspect authorization is older than its minimum age).
7. Stale Region A comes back (REGION_EPOCH=1, the writer endpoint listing A's dead database and
   B's) while B is stopped; a stale client calls its gateway. It must write nothing to B (every
   table's digest before and after) and call the PSP never. Without the fence: NOT RUN.
8. Figures (RTO: the kill to the first order placed in B CONFIRMED; RPO) and checks, as a table
   and as JSON: per purchase (customer, key) no double charge and no second authorization of a
   retried cart, no orphan hold, every acknowledged order in B or recreated by its client's
   retry, and every invariant of verification.invariants on B.

Exits 1 on any violation, 2 when the drill itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import psutil

from local_supervisor.embedded import free_port
from local_supervisor.launcher import LaunchedStack
from local_supervisor.readiness import GrpcHealthCheck, ReadinessProber
from local_supervisor.stack import PSP, STACK
from verification import collect, customers
from verification.drill_db import (
    EXIT_HARNESS_ERROR,
    EXIT_VIOLATION,
    STACK_HEALTH_ENV,
    Acknowledgements,
    missing,
)
from verification.faults import Progress
from verification.invariants import InvariantResult, Verdict, check_all
from verification.plan import CheckoutPlan, make_plan
from verification.region_checks import (
    AcknowledgedFate,
    Purchase,
    PurchaseRecord,
    TableMark,
    acknowledged_fate,
    attribution,
    double_charges,
    intents_by_purchase,
    orphan_holds,
    second_authorizations,
    stale_psp_requests,
    stale_writes,
)
from verification.replica import HOST, ReplicaPair, replica_pair, writer_endpoint
from verification.report import figures_table, invariant_lines, outcomes, verdict
from verification.snapshot import CONFIRMED_STATUSES, ClientCheckout, CustomerCancel, Snapshot
from verification.stack import REPO, ChaosStack, running_stack

log = logging.getLogger("verification.drill_region")
DATABASE = "marketplace"
REGION_A, REGION_B = "A", "B"
EPOCH_A, EPOCH_B = 1, 2
# Timers a lost Region leaves others to wait out, shortened for the drill's stacks: a key A
# left STARTED answers 409 until its checkout lease ends (default 30 s); a saga A's engine held
# is taken over once its lease ends (STACK_ENV: 5 s).
REGION_ENV = {"IDEMPOTENCY_LEASE_SECONDS": "5", **STACK_HEALTH_ENV}
STALE_CUSTOMER = "stale-region-client"
WITHIN = 120.0  # seconds for B's first confirmed order, the stale stack's processes, the PSP
# A warm Region B waits (NOT_SERVING) through the load before the loss: its supervisor gives it
# that long to become ready, counted from its start.
WARM_READY_WITHIN = 900.0
_ANSWERING = frozenset({"SERVING", "NOT_SERVING"})  # a health check's answers from a live server
PSP_REQUEST_MARK = "/v1/"  # the PSP logs one line per request; its API is under /v1
# What ends one POST of a retrying client; a 409 is then looked at (in flight, or a cart B
# has without its lines), a 404 is a cart B lacks.
FINAL_ANSWERS = frozenset({202, 404, 409, 422})
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

RaiseEpoch = Callable[[str, int], Awaitable[int]]


@dataclass(frozen=True, kw_only=True)
class DrillOptions:
    """One drill's knobs."""

    seed: int
    checkouts: int
    concurrency: int
    kill_at: float  # share of the checkouts finished when Region A is lost
    stall_replication: float  # seconds A's WAL sender is frozen before the kill
    stale_seconds: float  # how long stale Region A runs
    settle_within: float
    data_dir: Path
    json_path: Path
    bin_dir: Path | None
    warm_standby: bool = True  # B's stack runs on its replica before the loss (else after)


def parse_options(argv: Sequence[str]) -> DrillOptions:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m verification.drill_region",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument("--checkouts", type=int, default=None, help="customers (default 300)")
    parser.add_argument("--concurrency", type=int, default=None, help="customers at once (12)")
    parser.add_argument(
        "--kill-at",
        type=float,
        default=0.4,
        help="share of the load done when Region A is lost (default 0.4)",
    )
    parser.add_argument(
        "--stall-replication",
        type=float,
        default=0.0,
        help="freeze A's WAL sender this many seconds before the kill",
    )
    parser.add_argument(
        "--stale-seconds",
        type=float,
        default=None,
        help="how long stale Region A runs once its processes are up (10)",
    )
    parser.add_argument(
        "--settle-within",
        type=float,
        default=None,
        help="seconds for B's orders to settle (default 180)",
    )
    parser.add_argument(
        "--short",
        action="store_true",
        help="a short run for tests: 10 customers, 4 at once, 4 s stale",
    )
    parser.add_argument(
        "--cold-standby",
        action="store_true",
        help="start Region B's stack only once its database is promoted (default: warm, "
        "running NOT_SERVING on the replica before the loss, SERVING once promoted)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="logs (default: a temp dir)")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="figures as JSON (default: <data-dir>/drill-region.json)",
    )
    parser.add_argument(
        "--bin-dir",
        type=Path,
        default=None,
        help="PostgreSQL binaries (default: the embedded server's)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    short = args.short
    data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="drill-region-"))).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return DrillOptions(
        seed=args.seed if args.seed is not None else secrets.randbelow(2**31),
        checkouts=args.checkouts or (10 if short else 300),
        concurrency=args.concurrency or (4 if short else 12),
        kill_at=args.kill_at,
        stall_replication=args.stall_replication,
        stale_seconds=args.stale_seconds if args.stale_seconds is not None else 4 if short else 10,
        settle_within=args.settle_within or (90.0 if short else 180.0),
        data_dir=data_dir,
        json_path=args.json or data_dir / "drill-region.json",
        bin_dir=args.bin_dir,
        warm_standby=not args.cold_standby,
    )


def replay_command(options: DrillOptions) -> str:
    """The command that runs this drill again."""
    return (
        f"python -m verification.drill_region --seed {options.seed} "
        f"--checkouts {options.checkouts} --concurrency {options.concurrency} "
        f"--kill-at {options.kill_at:g} --stall-replication {options.stall_replication:g} "
        f"--stale-seconds {options.stale_seconds:g}"
    )


def load_fence() -> RaiseEpoch | None:
    """marketplace_platform.fence.raise_epoch, or None where the platform has no fence."""
    try:
        module = importlib.import_module("marketplace_platform.fence")
    except ImportError:
        return None
    found: RaiseEpoch | None = getattr(module, "raise_epoch", None)
    return found


class RegionAcknowledgements(Acknowledgements):
    """drill_db's acknowledgements, and which Region answered each order (by the gateway the
    request went to), with the wall-clock time of its first answer."""

    def __init__(self, gateways: Mapping[int, str]) -> None:
        super().__init__()
        self.gateways = dict(gateways)  # gateway port -> Region
        self.region: dict[str, str] = {}  # order id -> the Region that first answered it
        self.wall: dict[str, float] = {}  # order id -> time.time() of that answer

    async def on_response(self, response: httpx.Response) -> None:
        """Record a successful checkout, and its Region."""
        await super().on_response(response)
        request = response.request
        checkout = request.method == "POST" and request.url.path == "/v1/checkouts"
        if checkout and response.is_success:
            order_id = str(response.json()["order_id"])
            self.region.setdefault(order_id, self.gateways.get(request.url.port or 0, "?"))
            self.wall.setdefault(order_id, time.time())

    def of(self, region: str) -> set[str]:
        """The orders `region` answered first."""
        return {order for order, where in self.region.items() if where == region}


@dataclass
class Failover:
    """What happened from the loss of A on, in seconds after the kill (None: not seen)."""

    killed_at: float = 0.0  # monotonic
    killed_wall: float = 0.0
    processes_killed: int = 0
    stalled_walsender: bool = False
    replay_lag: float | None = None  # kill -> B's last replayed commit (seconds before the kill)
    rpo_seconds: float | None = None  # A's last acknowledged order B lacks -> B's last replay
    promoted: float | None = None
    fence_raised: int | None = None  # the epoch B's fence holds, None: no fence
    b_ready: float | None = None
    first_ack_in_b: float | None = None
    first_confirmed: float | None = None
    acknowledged_by_a: list[str] = field(default_factory=list)
    missing_at_promotion: list[str] = field(default_factory=list)
    sagas_running_at_promotion: int = 0


@dataclass
class Retries:
    """The clients' retries in B of what A had answered or left in flight."""

    looked_up: int = 0
    retried: int = 0
    refilled_carts: int = 0  # lines put back into a cart B has without them
    new_carts: int = 0  # carts filled anew, B lacking the first
    answers: dict[str, list[str]] = field(default_factory=dict)  # purchase -> what B said


@dataclass
class StaleRegion:
    """Stale Region A's return: what it wrote to B and sent the PSP (violations), or why the
    step did not run."""

    ran: bool = False
    not_run_why: str = ""
    processes_up: int = 0
    seconds: float = 0.0
    client_answers: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    psp_requests: list[str] = field(default_factory=list)
    tables_compared: int = 0


# -- the outside world ---------------------------------------------------------------------


@dataclass(frozen=True)
class OutsidePsp:
    """The one PSP simulator of the drill, outside both Regions."""

    url: str
    log_path: Path

    def request_lines(self) -> list[str]:
        """Every request it logged so far, in order."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if PSP_REQUEST_MARK in line]


@asynccontextmanager
async def outside_psp(data_dir: Path) -> AsyncIterator[OutsidePsp]:
    """`python -m simulators.psp` on a free port, its ledger in data_dir, until the block ends."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    port = free_port(HOST)
    psp = OutsidePsp(f"http://{HOST}:{port}", data_dir / "psp.log")
    env = os.environ | {
        "PSP_PORT": str(port),
        "PSP_HOST": HOST,
        "PSP_DATA_DIR": str(data_dir),
        "PSP_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    with psp.log_path.open("ab") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulators.psp", cwd=REPO, env=env,
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=psp.url) as client, asyncio.timeout(WITHIN):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"the PSP simulator exited ({process.returncode})")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz", timeout=1)).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield psp
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def share_carrier(region_dirs: Sequence[Path]) -> None:
    """One carrier bookings file for every Region (the carrier is the outside world): each
    later Region's carrier folder is the first's."""
    first = region_dirs[0] / "carrier"
    first.mkdir(parents=True, exist_ok=True)
    for later in region_dirs[1:]:
        later.mkdir(parents=True, exist_ok=True)
        (later / "carrier").symlink_to(first, target_is_directory=True)


# -- losing Region A -------------------------------------------------------------------------


def stall_walsender(pair: ReplicaPair) -> bool:
    """Freeze the primary's WAL sender (SIGSTOP): the standby receives nothing more."""
    sender = [p for p in _descendants(pair.primary) if "walsender" in _cmdline(p)]
    for process in sender:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGSTOP)
    return bool(sender)


def lose_region(launched: LaunchedStack, pair: ReplicaPair) -> int:
    """SIGKILL Region A whole: its supervisor and every process under it (services, workers,
    gateway, Redis) frozen first, then its database killed (verification.replica: postmaster
    and backends), then the frozen processes killed; how many processes were killed."""
    victims = []
    with contextlib.suppress(psutil.NoSuchProcess):
        supervisor = psutil.Process(launched.process.pid)
        supervisor.send_signal(signal.SIGSTOP)
        victims = [supervisor, *supervisor.children(recursive=True)]
    for victim in victims[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.send_signal(signal.SIGSTOP)
    pair.primary.kill()
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=10)
    return len(victims)


def _descendants(server: Any) -> list[psutil.Process]:
    if server.process is None:
        return []
    try:
        return list(psutil.Process(server.process.pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


async def _fetchval(url: str, query: str, *args: Any) -> Any:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


async def last_replayed_wall(pair: ReplicaPair) -> float | None:
    """The commit time of the last transaction the standby replayed (epoch seconds)."""
    assert pair.standby is not None
    at = await _fetchval(pair.standby.url(), "SELECT pg_last_xact_replay_timestamp()")
    return None if at is None else float(at.timestamp())


async def _sagas_running(url: str, prefix: str) -> int:
    return int(
        await _fetchval(
            url,
            "SELECT count(*) FROM saga.executions e JOIN checkout.orders o"
            " ON e.name = o.order_id::text WHERE e.status = 'RUNNING' AND o.customer_id LIKE $1",
            prefix + "%",
        )
    )


async def first_confirmed_after(url: str, prefix: str, wall: float) -> float:
    """When (monotonic) an order of the run placed after `wall` (epoch seconds) was first
    seen CONFIRMED."""
    while True:
        with contextlib.suppress(*_DB_ERRORS):
            found = await _fetchval(
                url,
                "SELECT EXISTS (SELECT 1 FROM checkout.orders WHERE customer_id LIKE $1"
                " AND created_at > to_timestamp($2) AND status = ANY($3::text[]))",
                prefix + "%", wall, sorted(CONFIRMED_STATUSES),
            )  # fmt: skip
            if found:
                return time.monotonic()
        await asyncio.sleep(0.2)


# -- the clients in Region B -----------------------------------------------------------------


@dataclass
class ClientPurchase:
    """One customer's purchase across the Regions: its carts and every order it was answered."""

    plan: CheckoutPlan
    carts: list[str] = field(default_factory=list)
    order_ids: set[str] = field(default_factory=set)
    cancel: CustomerCancel | None = None


async def retry_in_b(
    gateway: httpx.AsyncClient,
    traffic: customers.Traffic,
    purchase: ClientPurchase,
    acks: RegionAcknowledgements,
    retries: Retries,
) -> None:
    """What a client does once B serves: look up each order A acknowledged; an order B cannot
    find, or a checkout never answered, is sent again with the SAME key until a final answer.
    Its cart as B has it decides how: the same cart (its key still in flight: again, once the
    lease A left ends); the cart's lines put back (B has the cart but not its lines); a new cart
    filled (B lacks the cart)."""
    plan = purchase.plan
    answered_by_a = sorted(o for o in purchase.order_ids if acks.region.get(o) == REGION_A)
    found = False
    for order_id in answered_by_a:
        retries.looked_up += 1
        answer = await customers.get_order(gateway, traffic, plan.customer_id, order_id)
        found = found or (answer is not None and answer.status_code == 200)
    answered_by_b = any(acks.region.get(o) == REGION_B for o in purchase.order_ids)
    if found or answered_by_b or not purchase.carts:
        return
    retries.retried += 1
    said: list[str] = []
    deadline = time.monotonic() + customers.GIVE_UP_AFTER
    while time.monotonic() < deadline:
        answer = await customers.post_checkout(
            gateway, traffic, plan, purchase.carts[-1], expect=FINAL_ANSWERS
        )
        if answer is None:
            said.append("gave up")
            break
        problem = _problem_type(answer)
        said.append(f"{answer.status_code} {problem}".strip())
        if answer.status_code == 202:
            purchase.order_ids.add(str(answer.json()["order_id"]))
            break
        if answer.status_code == 409 and problem == "cart-not-checkoutable":
            retries.refilled_carts += 1
            await customers.put_lines(gateway, traffic, plan, purchase.carts[-1])
        elif answer.status_code == 404:
            cart_id = await customers.fill_cart(gateway, traffic, plan)
            if cart_id is None:
                break
            retries.new_carts += 1
            purchase.carts.append(cart_id)
        elif answer.status_code != 409:
            break  # final: e.g. 422, the key bound in B to a cart B lost
        await asyncio.sleep(0.5)
    retries.answers[f"{plan.customer_id} {plan.idempotency_key}"] = said


def _problem_type(answer: httpx.Response) -> str:
    """The last part of a problem answer's type ("cart-not-checkoutable"), else ""."""
    if answer.status_code < 400:
        return ""
    try:
        return str(answer.json().get("type", "")).rsplit("/", 1)[-1]
    except ValueError:
        return ""


# -- stale Region A ----------------------------------------------------------------------------


async def table_marks(url: str) -> dict[str, TableMark]:
    """Every table of the database: its row count and a digest of all its rows."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        tables = await connection.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        marks = {}
        for row in tables:
            name = f'"{row["table_schema"]}"."{row["table_name"]}"'
            found = await connection.fetchrow(
                f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, ',' ORDER BY t::text),"
                f" '')) AS digest FROM {name} t"
            )
            marks[f"{row['table_schema']}.{row['table_name']}"] = TableMark(
                int(found["n"]), str(found["digest"])
            )
        return marks
    finally:
        await connection.close()


async def _stale_client(stack: ChaosStack, stale: StaleRegion, until: float) -> None:
    """A client that still reaches Region A: it tries to open a cart there until `until`."""
    headers = customers.bearer(STALE_CUSTOMER)
    async with httpx.AsyncClient(base_url=stack.url("gateway")) as gateway:
        while time.monotonic() < until:
            try:
                answer = await gateway.post("/v1/carts", json={}, headers=headers, timeout=2)
                stale.client_answers.append(str(answer.status_code))
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.5)


async def run_stale_region(
    pair: ReplicaPair, psp: OutsidePsp, options: DrillOptions, data_dir: Path
) -> StaleRegion:
    """Region A's processes back at epoch 1 on the writer endpoint (A's database still down,
    then B's), B's own stack stopped; what they wrote to B and sent the PSP meanwhile."""
    assert pair.standby is not None
    stale = StaleRegion(ran=True)
    b_url = pair.standby.url(DATABASE)
    before, psp_before = await table_marks(b_url), psp.request_lines()
    endpoint = writer_endpoint([pair.primary.port, pair.standby.port], DATABASE)
    async with running_stack(
        database_url=endpoint, data_dir=data_dir, rng=random.Random(options.seed + 2),
        ready_within=None, settings=REGION_ENV | {"REGION_EPOCH": str(EPOCH_A)},
        psp_url=psp.url, skip_migrate=True,
    ) as stack:  # fmt: skip
        started = time.monotonic()
        assert stack.launched is not None
        try:
            async with asyncio.timeout(WITHIN):
                while True:
                    if _all_running(stack.launched):
                        break
                    await asyncio.sleep(0.2)
        except TimeoutError:
            log.warning("stale Region A: not every process started within %.0fs", WITHIN)
        await _answering(stack.url("gateway"))
        stale.processes_up = sum(pid is not None for pid in stack.processes().values())
        await _stale_client(stack, stale, time.monotonic() + options.stale_seconds)
        stale.seconds = time.monotonic() - started
    after, psp_after = await table_marks(b_url), psp.request_lines()
    stale.tables_compared = len(after)
    stale.writes = stale_writes(before, after)
    stale.psp_requests = stale_psp_requests(psp_before, psp_after)
    return stale


async def _answering(url: str) -> None:
    """Return once an HTTP server answers at `url` (whatever it says), or after WITHIN."""
    async with httpx.AsyncClient(base_url=url) as client:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WITHIN):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        await client.get("/readyz", timeout=1)
                        return
                    await asyncio.sleep(0.2)


async def _warmed_up(stack: ChaosStack) -> None:
    """Return once every gRPC service of a warm stack answers its health check (NOT_SERVING:
    its database is a replica), or after WITHIN: the load must not begin before B's processes
    are up, or a short run would time B's start, not its failover."""
    prober = ReadinessProber()
    checks = [
        GrpcHealthCheck(stack.grpc_address(entry.name))
        for entry in STACK
        if entry.port_offset is not None
    ]
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WITHIN):
                for check in checks:
                    while True:
                        if (await prober.check(check)).detail in _ANSWERING:
                            break
                        await asyncio.sleep(0.2)
    finally:
        await prober.close()
    await _answering(stack.url("gateway"))


def _all_running(launched: LaunchedStack) -> bool:
    """Whether the supervisor started every process of the stack (its state file has a pid
    for each; the first process starts after the migrations)."""
    wanted = {entry.name for entry in STACK if entry.name != PSP}
    pids = launched.processes()
    return wanted <= {name for name, pid in pids.items() if pid is not None}


# -- the drill ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Everything the drill found, for the report and the JSON."""

    failover: Failover
    retries: Retries
    stale: StaleRegion
    snapshot: Snapshot
    results: list[InvariantResult]
    fate: AcknowledgedFate
    double_charges: list[str]
    second_authorizations: list[str]
    second_authorizations_expected: list[str]
    orphan_holds: list[str]
    orphan_holds_before_reconciliation: int
    unattributed_intents: int
    answered: int  # orders acknowledged to clients, both Regions
    traffic: customers.Traffic
    load_seconds: float

    def violations(self) -> list[str]:
        """Every drill violation (the invariants' apart)."""
        return [
            *self.double_charges,
            *self.second_authorizations,
            *self.orphan_holds,
            *self.fate.lost,
            *(f"stale Region A wrote: {w}" for w in self.stale.writes),
            *(f"stale Region A: {r}" for r in self.stale.psp_requests),
        ]

    def failed(self) -> bool:
        """Whether anything was violated."""
        return bool(self.violations()) or any(r.verdict is Verdict.FAIL for r in self.results)


def purchase_records(
    purchases: Sequence[ClientPurchase], acks: RegionAcknowledgements
) -> list[PurchaseRecord]:
    """Each purchase with the orders each Region answered for it."""
    return [
        PurchaseRecord(
            customer_id=p.plan.customer_id,
            key=p.plan.idempotency_key,
            carts=tuple(p.carts),
            answered_in_a=frozenset(o for o in p.order_ids if acks.region.get(o) == REGION_A),
            answered_in_b=frozenset(o for o in p.order_ids if acks.region.get(o) != REGION_A),
        )
        for p in purchases
    ]


def final_client_view(records: Sequence[PurchaseRecord]) -> list[ClientCheckout]:
    """What the invariants hold B against: each purchase's answers from B where B answered
    it, else A's (what A answered and B lost is acknowledged_fate's to judge)."""
    return [
        ClientCheckout(
            customer_id=r.customer_id,
            idempotency_key=r.key,
            cart_id=r.carts[-1],
            order_ids=r.answered_in_b or r.answered_in_a,
        )
        for r in records
        if r.carts
    ]


async def stored_keys(url: str, prefix: str) -> dict[Purchase, str | None]:
    """Each (customer, key) of the run checkout keeps, with the order its answer names."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT customer_id, key, response->>'order_id' AS order_id"
            " FROM checkout.idempotency_keys WHERE customer_id LIKE $1",
            prefix + "%",
        )
    finally:
        await connection.close()
    return {(r["customer_id"], r["key"]): r["order_id"] for r in rows}


class RegionDrill:
    """One drill's run, phase by phase."""

    def __init__(self, options: DrillOptions, pair: ReplicaPair, psp: OutsidePsp) -> None:
        self.options = options
        self.pair = pair
        self.psp = psp
        self.plan = make_plan(
            seed=options.seed, checkouts=options.checkouts, kills=0, kill_targets=(),
            redis_restarts=0, outage_seconds=0, poison_queues=(),
        )  # fmt: skip
        self.prefix = f"chaos-{self.plan.run_id}-"
        self.scope = collect.Scope(self.prefix, tuple(self.plan.initial_stock))
        self.traffic = customers.Traffic()
        self.failover = Failover()
        self.retries = Retries()
        self.fence = load_fence()
        self.records: list[PurchaseRecord] = []  # set once B has settled
        self.keys_in_b: dict[Purchase, str | None] = {}
        self.dirs = {
            name: options.data_dir / f"region-{name.lower()}" for name in ("A", "B", "A-stale")
        }
        share_carrier(list(self.dirs.values()))

    @property
    def b_url(self) -> str:
        """Region B's database alone."""
        assert self.pair.standby is not None
        return self.pair.standby.url(DATABASE)

    def stack_of(
        self, region: str, epoch: int, database_url: str, *, warm: bool = False
    ) -> AbstractAsyncContextManager[ChaosStack]:
        """Region `region`'s stack at `epoch` on `database_url`, calling the outside PSP. Only
        the first Region migrates: the schema comes to B with its database (the runbook's
        "migrates nothing"). `warm`: entered at once, its services NOT_SERVING while their
        database is a read-only replica (no writer), SERVING once it is promoted."""
        return running_stack(
            database_url=database_url, data_dir=self.dirs[region],
            rng=random.Random(f"{self.options.seed}-{region}"),
            settings=REGION_ENV | {"REGION_EPOCH": str(epoch)}, psp_url=self.psp.url,
            skip_migrate=region != REGION_A, enter_at_once=warm,
            ready_within=WARM_READY_WITHIN if warm else 120.0,
        )  # fmt: skip

    async def run(self) -> Outcome:
        """Every phase; what it found."""
        options, failover = self.options, self.failover
        purchases = [ClientPurchase(c) for c in self.plan.checkouts]
        progress = Progress(len(purchases))
        acks = RegionAcknowledgements({})
        async with (
            AsyncExitStack() as regions,
            httpx.AsyncClient(
                limits=httpx.Limits(max_connections=options.concurrency * 5),
                event_hooks={"request": [acks.on_request], "response": [acks.on_response]},
            ) as gateway,
        ):
            async with self.stack_of(REGION_A, EPOCH_A, self.pair.writer_url(DATABASE)) as a:
                log.info("Region A SERVING; %d checkouts", options.checkouts)
                acks.gateways[a.ports.http_ports["gateway"]] = REGION_A
                gateway.base_url = httpx.URL(a.url("gateway"))
                await customers.stock_catalog(gateway, self.traffic, prices=self.plan.prices,
                                              initial_stock=self.plan.initial_stock)  # fmt: skip
                await self.pair.wait_replayed()
                warm_b = None
                if options.warm_standby:
                    warm_b = await regions.enter_async_context(
                        self.stack_of(REGION_B, EPOCH_B, self.b_url, warm=True)
                    )
                    await _warmed_up(warm_b)
                    log.info("Region B's stack up on its replica, NOT_SERVING (no writer)")
                started = time.monotonic()
                load = asyncio.create_task(self.load(gateway, purchases, progress))
                await progress.reach(options.kill_at)
                assert a.launched is not None
                await self.lose_a(a.launched)
            try:
                await self.promote_b(acks)
                if warm_b is None:
                    b = await regions.enter_async_context(
                        self.stack_of(REGION_B, EPOCH_B, self.b_url)
                    )
                else:
                    b = warm_b
                    assert b.launched is not None
                    await b.launched.wait_ready(WARM_READY_WITHIN)
                failover.b_ready = time.monotonic() - failover.killed_at
                acks.gateways[b.ports.http_ports["gateway"]] = REGION_B
                gateway.base_url = httpx.URL(b.url("gateway"))  # the traffic cut over
                log.info("Region B SERVING %.1fs after the kill; clients cut over",
                         failover.b_ready)  # fmt: skip
                confirmed = asyncio.create_task(
                    first_confirmed_after(self.b_url, self.prefix, failover.killed_wall)
                )
                await load
                load_seconds = time.monotonic() - started
                await asyncio.gather(*(
                    retry_in_b(gateway, self.traffic, p, acks, self.retries)
                    for p in purchases
                ))  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WITHIN):
                        seen = await confirmed
                        failover.first_confirmed = seen - failover.killed_at
                confirmed.cancel()
                failover.first_ack_in_b = _first_after(acks, REGION_B, failover.killed_at)
                outcome = await self.judge(b, purchases, acks, load_seconds)
            finally:
                load.cancel()
                await asyncio.gather(load, return_exceptions=True)
        outcome.answered = len(acks.orders)
        outcome.stale = await self.stale_region()
        return outcome

    async def load(
        self, gateway: httpx.AsyncClient, purchases: Sequence[ClientPurchase], progress: Progress
    ) -> None:
        """Every planned customer, `concurrency` at once, against whichever Region serves."""
        seats = asyncio.Semaphore(self.options.concurrency)

        async def customer(purchase: ClientPurchase) -> None:
            async with seats:
                result = await customers.check_out(gateway, self.traffic, purchase.plan)
            if result.cart_id is not None:
                purchase.carts.append(result.cart_id)
            purchase.order_ids |= result.order_ids
            purchase.cancel = result.cancel
            await progress.advance()

        await asyncio.gather(*(customer(p) for p in purchases))

    async def lose_a(self, launched: LaunchedStack) -> None:
        """Region A lost whole, after its replication stalled if asked; B's lag measured."""
        failover = self.failover
        if self.options.stall_replication > 0:
            failover.stalled_walsender = stall_walsender(self.pair)
            await asyncio.sleep(self.options.stall_replication)
        failover.killed_at, failover.killed_wall = time.monotonic(), time.time()
        failover.processes_killed = lose_region(launched, self.pair)
        log.info("Region A lost: %d processes and its database SIGKILLed",
                 failover.processes_killed)  # fmt: skip

    async def promote_b(self, acks: RegionAcknowledgements) -> None:
        """RPO as B stands at the kill, then B promoted and its fence raised."""
        failover, pair = self.failover, self.pair
        assert pair.standby is not None
        replayed = await last_replayed_wall(pair)
        await pair.standby.promote()
        failover.promoted = time.monotonic() - failover.killed_at
        failover.acknowledged_by_a = sorted(acks.of(REGION_A))
        failover.missing_at_promotion = await missing(self.b_url, set(failover.acknowledged_by_a))
        failover.sagas_running_at_promotion = await _sagas_running(self.b_url, self.prefix)
        if replayed is not None:
            failover.replay_lag = max(0.0, failover.killed_wall - replayed)
            lost_walls = [acks.wall[o] for o in failover.missing_at_promotion if o in acks.wall]
            failover.rpo_seconds = max(0.0, max(lost_walls) - replayed) if lost_walls else 0.0
        if self.fence is not None:
            failover.fence_raised = await self.fence(self.b_url, EPOCH_B)
        log.info("B promoted %.1fs after the kill; %d of %d acknowledged orders missing",
                 failover.promoted, len(failover.missing_at_promotion),
                 len(failover.acknowledged_by_a))  # fmt: skip

    async def judge(
        self,
        stack_b: ChaosStack,
        purchases: Sequence[ClientPurchase],
        acks: RegionAcknowledgements,
        load_seconds: float,
    ) -> Outcome:
        """B settles and reconciles with the PSP; then every check."""
        options = self.options
        waited, unsettled = await collect.settle(
            stack_b, self.scope, within=options.settle_within,
            pipeline=collect.has_relay(stack_b.processes()),
        )  # fmt: skip
        log.info("B settled in %.0fs (%d orders unsettled)", waited, unsettled)
        records = purchase_records(purchases, acks)
        clients = collect.ClientRecords(
            checkouts=final_client_view(records),
            cancels=[p.cancel for p in purchases if p.cancel is not None],
        )
        settle_seconds = options.settle_within if unsettled else waited
        async with httpx.AsyncClient(base_url=self.psp.url) as psp:
            # The first snapshot's ReconcilePayments voids the orphans (once old enough); the
            # second reads the PSP after it, and is the one judged.
            before, _ = await collect.take_snapshot(
                stack_b, psp, self.scope, initial_stock=self.plan.initial_stock,
                clients=clients, settle_seconds=settle_seconds,
            )  # fmt: skip
            snapshot, _ = await collect.take_snapshot(
                stack_b, psp, self.scope, initial_stock=self.plan.initial_stock,
                clients=clients, settle_seconds=settle_seconds,
            )  # fmt: skip
        keys_in_b = await stored_keys(self.b_url, self.prefix)
        self.records, self.keys_in_b = records, keys_in_b
        orders_in_b = {o.order_id for o in snapshot.orders}
        return Outcome(
            failover=self.failover, retries=self.retries, stale=StaleRegion(),
            snapshot=snapshot, results=check_all(snapshot),
            fate=acknowledged_fate(records, orders_in_b, keys_in_b,
                                   self.failover.missing_at_promotion),
            double_charges=[], second_authorizations=[], second_authorizations_expected=[],
            orphan_holds=orphan_holds(snapshot.intents, orders_in_b),
            orphan_holds_before_reconciliation=len(orphan_holds(before.intents, orders_in_b)),
            unattributed_intents=0, answered=0, traffic=self.traffic, load_seconds=load_seconds,
        )  # fmt: skip

    async def stale_region(self) -> StaleRegion:
        """Step 7, when the platform has a fence to test."""
        if self.fence is None:
            return StaleRegion(not_run_why="marketplace_platform.fence is not there")
        return await run_stale_region(self.pair, self.psp, self.options, self.dirs["A-stale"])

    async def attribute(self, outcome: Outcome) -> None:
        """Intents to purchases (by the clients' answers, B's keys and, read from A's database
        started again on its own, A's), then the per-purchase money checks."""
        keys_in_a: dict[Purchase, str | None] = {}
        try:
            await self.pair.primary.start()
            keys_in_a = await stored_keys(self.pair.primary.url(DATABASE), self.prefix)
        except (RuntimeError, *_DB_ERRORS) as error:
            log.warning("A's database could not be read after the drill: %s", error)
        finally:
            await self.pair.primary.stop()
        owner = attribution(self.records, self.keys_in_b, keys_in_a)
        grouped, unattributed = intents_by_purchase(outcome.snapshot.intents, owner)
        outcome.double_charges = double_charges(grouped)
        outcome.second_authorizations, outcome.second_authorizations_expected = (
            second_authorizations(grouped, self.records)
        )
        outcome.unattributed_intents = len(unattributed)


def _first_after(acks: RegionAcknowledgements, region: str, moment: float) -> float | None:
    later = [at for order, at in acks.orders.items() if acks.region.get(order) == region]
    return min(later) - moment if later else None


# -- the report ------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "not seen" if value is None else f"{value:.2f} s"


def figures(options: DrillOptions, outcome: Outcome) -> list[tuple[str, str]]:
    """The figures table's rows."""
    f, fate, stale = outcome.failover, outcome.fate, outcome.stale
    fence = "not there" if f.fence_raised is None else f"epoch {f.fence_raised}"
    return [
        ("checkouts planned / orders in B",
         f"{options.checkouts} / {len(outcome.snapshot.orders)}"),
        ("load", f"{outcome.load_seconds:.1f} s"),
        ("Region A lost at", f"{options.kill_at:.0%} of the load: {f.processes_killed} "
                             "processes and its database SIGKILLed"),
        ("replication stalled before the kill", f"{options.stall_replication:g} s"
         + ("" if not options.stall_replication or f.stalled_walsender else " (no WAL sender)")),
        ("B's replay lag at the kill (last replayed commit)", _seconds(f.replay_lag)),
        ("RPO: acknowledged by A / missing in B at promotion",
         f"{len(f.acknowledged_by_a)} / {len(f.missing_at_promotion)}"),
        ("RPO: seconds (A's last lost ack - B's last replay)", _seconds(f.rpo_seconds)),
        ("kill -> B promoted", _seconds(f.promoted)),
        ("fence on B", fence),
        ("kill -> B's stack SERVING (traffic cut over)", _seconds(f.b_ready)),
        ("kill -> first checkout acknowledged by B", _seconds(f.first_ack_in_b)),
        ("RTO: kill -> first order placed in B CONFIRMED", _seconds(f.first_confirmed)),
        ("sagas RUNNING in B at promotion (re-driven)", str(f.sagas_running_at_promotion)),
        ("orders A acknowledged: kept / recreated same id / other id / lost",
         f"{len(fate.kept)} / {len(fate.recreated_same_id)} / {len(fate.recreated_other_id)} "
         f"/ {len(fate.lost)}"),
        ("client retries in B: looked up / sent again / lines put back / new carts",
         f"{outcome.retries.looked_up} / {outcome.retries.retried} / "
         f"{outcome.retries.refilled_carts} / {outcome.retries.new_carts}"),
        ("orphan holds before / after reconciliation",
         f"{outcome.orphan_holds_before_reconciliation} / {len(outcome.orphan_holds)}"),
        ("double charges (per purchase)", str(len(outcome.double_charges))),
        ("second authorizations: retried cart / new cart",
         f"{len(outcome.second_authorizations)} / "
         f"{len(outcome.second_authorizations_expected)}"),
        ("PSP intents no record attributes to a purchase", str(outcome.unattributed_intents)),
        ("stale Region A: writes to B / PSP requests",
         f"{len(stale.writes)} / {len(stale.psp_requests)}" if stale.ran else "NOT RUN"),
    ]  # fmt: skip


def render(options: DrillOptions, outcome: Outcome) -> str:
    """The drill's report: figures, outcomes, invariants, checks, the verdict."""
    rows = figures(options, outcome)
    stale = outcome.stale
    answers = ", ".join(f"{k} x{n}" for k, n in sorted(outcome.traffic.answers.items()))
    out = [
        f"drill-region, seed {options.seed}: Region A lost whole, asynchronous Region B "
        "promoted",
        f"replay: {replay_command(options)}",
        f"data and logs: {options.data_dir}",
        "",
        *figures_table(rows),
        "",
        "orders in B by outcome:",
        *(f"  {n:6d}  {label}" for label, n in sorted(outcomes(outcome.snapshot).items())),
        f"client answers: {answers}",
        f"client gave up: {len(outcome.traffic.abandoned)}",
        *(f"  {line}" for line in outcome.traffic.abandoned[:5]),
        *(f"  retried in B: {who}: {' -> '.join(said)}"
          for who, said in sorted(outcome.retries.answers.items())[:20]),
        *(f"  recreated under another order id: {line}"
          for line in outcome.fate.recreated_other_id[:10]),
        *(f"  expected second authorization: {line}"
          for line in outcome.second_authorizations_expected[:10]),
        "",
        *invariant_lines(outcome.results),
        "region checks:",
    ]  # fmt: skip
    problems = outcome.violations()
    out += [f"  - {p}" for p in problems[:50]] or [
        "  no double charge, no second authorization of a retried cart, no orphan hold, "
        "every acknowledged order in B or recreated" + (", stale Region A wrote nothing and "
        "called no PSP" if stale.ran else "")
    ]  # fmt: skip
    if stale.ran:
        out.append(f"  stale Region A: {stale.processes_up} processes up for {stale.seconds:.1f}"
                   f" s, {stale.tables_compared} tables compared, its gateway answered "
                   f"{_counted(stale.client_answers)}")  # fmt: skip
    else:
        out.append(f"  stale Region A: NOT RUN ({stale.not_run_why})")
    failed = outcome.failed()
    result = "FAIL" if failed else "PASS" if stale.ran else "PASS (stale Region A NOT RUN)"
    out += ["", f"result: {result}: invariants {verdict(outcome.results)}; "
                f"{len(problems)} region violation(s) (seed {options.seed})"]  # fmt: skip
    return "\n".join(out)


def _counted(answers: Sequence[str]) -> str:
    if not answers:
        return "nothing"
    return ", ".join(f"{a} x{answers.count(a)}" for a in sorted(set(answers)))


def as_json(options: DrillOptions, outcome: Outcome) -> dict[str, Any]:
    """The figures and checks as JSON."""
    f = outcome.failover
    return {
        "seed": options.seed,
        "replay": replay_command(options),
        "passed": not outcome.failed(),
        "figures": dict(figures(options, outcome)),
        "rto_seconds": f.first_confirmed,
        "rpo_orders": len(f.missing_at_promotion),
        "rpo_seconds": f.rpo_seconds,
        "replay_lag_seconds": f.replay_lag,
        "failover": asdict(f),
        "retries": asdict(outcome.retries),
        "acknowledged": asdict(outcome.fate),
        "double_charges": outcome.double_charges,
        "second_authorizations": outcome.second_authorizations,
        "second_authorizations_new_cart": outcome.second_authorizations_expected,
        "orphan_holds": outcome.orphan_holds,
        "stale_region": asdict(outcome.stale),
        "invariants": [
            {"number": r.number, "title": r.title, "verdict": str(r.verdict),
             "counterexamples": list(r.counterexamples)}
            for r in outcome.results
        ],
        "violations": outcome.violations(),
    }  # fmt: skip


async def run(options: DrillOptions) -> int:
    """One drill; the exit code."""
    async with AsyncExitStack() as exits:
        psp = await exits.enter_async_context(outside_psp(options.data_dir / "psp"))
        pair = await exits.enter_async_context(
            replica_pair(synchronous=False, bin_dir=options.bin_dir)
        )
        try:
            await pair.create_database(DATABASE)
            await pair.wait_replayed()
            drill = RegionDrill(options, pair, psp)
            outcome = await drill.run()
            await drill.attribute(outcome)
        finally:
            for server in pair.servers:
                with contextlib.suppress(OSError):
                    shutil.copy(server.log_path, options.data_dir / f"postgres-{server.name}.log")
    print(render(options, outcome), flush=True)
    options.json_path.parent.mkdir(parents=True, exist_ok=True)
    options.json_path.write_text(json.dumps(as_json(options, outcome), indent=2) + "\n")
    return EXIT_VIOLATION if outcome.failed() else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, print the figures; 0 when every check holds."""
    logging.basicConfig(
        level=logging.WARNING, format="drill-region | %(message)s", stream=sys.stderr, force=True
    )
    logging.getLogger("verification").setLevel(logging.INFO)
    options = parse_options(sys.argv[1:] if argv is None else argv)
    print(f"drill-region seed {options.seed}; replay with: {replay_command(options)}", flush=True)
    try:
        return asyncio.run(run(options))
    except Exception:
        log.exception("the drill could not complete (seed %d)", options.seed)
        return EXIT_HARNESS_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
