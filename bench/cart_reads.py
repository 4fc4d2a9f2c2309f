"""Cart reads per second through the real gRPC cart service, with the Redis cache and without.

Two cart servers share one fresh database: one reads through the cache, the other has it
disabled (every read goes to PostgreSQL). Both phases run interleaved (cached, uncached, ...)
in one run and the ratio of their medians is printed; the script only reports, it never asserts
a speed. Run it with `make bench` or `python -m bench.cart_reads --help`. It uses DATABASE_URL's
server (a fresh database, dropped after) or an embedded PostgreSQL, and REDIS_URL or an
embedded redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import redis.asyncio as redis
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.inventory_reservations import (
    Attempt,
    BenchPlan,
    PhaseResult,
    fresh_database,
    postgres_server,
    run_phase,
)
from bench.inventory_reservations import BenchSettings as PostgresSettings
from local_supervisor.embedded import free_port, redis_server_argv, redis_url
from marketplace.cart.v1 import cart_service_pb2 as pb
from marketplace.cart.v1 import cart_service_pb2_grpc as pb_grpc
from marketplace.common.v1 import ids_pb2, money_pb2
from marketplace_platform.db import create_engine, ping
from marketplace_platform.grpc_server import SERVING, RunningServer, start_server
from marketplace_platform.migrations import discover_services, upgrade
from services.cart import bootstrap as cart
from verification.progress import ProgressLine

if TYPE_CHECKING:
    from marketplace.cart.v1.cart_service_pb2_grpc import CartServiceAsyncStub as Stub

PRODUCTS = 20
LINES_PER_CART = 5


class CartBenchSettings(BaseSettings):
    """What the benchmark reads from the environment, once."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str | None = None
    redis_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class CartReadsReport:
    """Every figure of a run, as printed and as written to --json."""

    plan: BenchPlan
    carts: int
    phases: tuple[PhaseResult, ...]
    cached_per_second: float
    uncached_per_second: float
    cached_over_uncached: float
    redis: str


def parse_plan(argv: Sequence[str] | None = None) -> tuple[BenchPlan, int]:
    """The benchmark plan (and how many carts to read) from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent readers")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="cached+uncached pairs")
    parser.add_argument("--carts", type=int, default=200, help="carts read at random")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if min(args.concurrency, args.rounds, args.carts) < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("concurrency, rounds and carts must be >= 1, seconds > 0, warmup >= 0")
    plan = BenchPlan(
        concurrency=args.concurrency,
        seconds=args.seconds,
        warmup=args.warmup,
        rounds=args.rounds,
        json_path=args.json,
    )
    return plan, args.carts


@asynccontextmanager
async def redis_server(settings: CartBenchSettings) -> AsyncIterator[tuple[str, str]]:
    """The Redis to cache in and its kind: REDIS_URL's, else an embedded redis-server."""
    if settings.redis_url:
        yield settings.redis_url, "REDIS_URL"
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as scratch:
        argv = redis_server_argv(Path(scratch), port=port, append_only=False)
        process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL)
        try:
            await wait_for_redis(redis_url(port))
            yield redis_url(port), "embedded"
        finally:
            process.terminate()
            await process.wait()


@asynccontextmanager
async def cart_server(
    engine: AsyncEngine, url: str, *, cached: bool, prefix: str
) -> AsyncIterator[RunningServer]:
    """A cart server on a free port, with its cache (trusted before it returns) or without."""
    settings = cart.CartSettings(
        redis_url=url, grpc_port=0, cart_cache_enabled=cached, cart_cache_prefix=prefix
    )
    parts = cart.build(settings)(engine)
    running = await start_server(settings, parts.services, lambda: ping(engine))
    loops = [asyncio.create_task(loop()) for loop in parts.background]
    try:
        if cached:
            await until_serving(f"127.0.0.1:{running.port}", cart.CACHE_HEALTH_NAME)
        yield running
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await running.stop(1)


async def until_serving(address: str, service: str, *, within: float = 30.0) -> None:
    """Poll the server's health for `service` until it is SERVING."""
    deadline = asyncio.get_running_loop().time() + within
    async with grpc.aio.insecure_channel(address) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # the stub types lack aio methods
        request = health_pb2.HealthCheckRequest(service=service)
        while (await health.Check(request, timeout=5)).status != SERVING:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{service} not SERVING after {within}s")
            await asyncio.sleep(0.05)


async def wait_for_redis(url: str, *, within: float = 10.0) -> None:
    """Poll until the Redis at `url` answers PING."""
    client = redis.Redis.from_url(url, socket_timeout=0.5)
    deadline = asyncio.get_running_loop().time() + within
    try:
        while True:
            try:
                await client.ping()
                return
            except redis.ConnectionError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def seed(stub: Stub, carts: int) -> list[tuple[str, str]]:
    """Products, then `carts` carts of five lines each; their (cart id, customer id)."""
    skus = [f"BENCH-{number:03d}" for number in range(PRODUCTS)]
    for sku in skus:
        await stub.UpsertProduct(
            pb.UpsertProductRequest(
                idempotency_key=f"bench-product-{sku}",
                sku=ids_pb2.Sku(value=sku),
                name=f"Bench product {sku}",
                price=money_pb2.Money(amount_minor=1999, currency="USD"),
            )
        )
    picker = random.Random(1)

    async def one(number: int) -> tuple[str, str]:
        owner = ids_pb2.CustomerId(value=f"bench-customer-{number}")
        created = await stub.CreateCart(
            pb.CreateCartRequest(idempotency_key=f"bench-cart-{number:06d}", customer_id=owner)
        )
        for sku in picker.sample(skus, LINES_PER_CART):
            await stub.SetItemQuantity(
                pb.SetItemQuantityRequest(
                    idempotency_key=f"bench-{uuid.uuid4().hex}",
                    cart_id=created.cart.cart_id,
                    customer_id=owner,
                    sku=ids_pb2.Sku(value=sku),
                    quantity=picker.randint(1, 5),
                )
            )
        return created.cart.cart_id.value, owner.value

    gate = asyncio.Semaphore(16)

    async def gated(number: int) -> tuple[str, str]:
        async with gate:
            return await one(number)

    return list(await asyncio.gather(*(gated(number) for number in range(carts))))


def cart_reads(stubs: Sequence[Stub], carts: Sequence[tuple[str, str]]) -> Attempt:
    """Every attempt reads a random cart through one of the stubs, in turn."""
    picker = random.Random()
    turn = iter(range(1 << 62))

    async def attempt() -> None:
        cart_id, customer_id = picker.choice(carts)
        stub = stubs[next(turn) % len(stubs)]
        await stub.GetCart(
            pb.GetCartRequest(
                cart_id=ids_pb2.CartId(value=cart_id),
                customer_id=ids_pb2.CustomerId(value=customer_id),
            ),
            timeout=10,
        )

    return attempt


@asynccontextmanager
async def stubs_for(running: RunningServer, count: int) -> AsyncIterator[list[Stub]]:
    """`count` stubs, each on a channel of its own, so readers do not share one connection."""
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{running.port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(count)
    ]
    try:
        yield [pb_grpc.CartServiceStub(channel) for channel in channels]
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


async def measure(
    database_url: str, cache_url: str, redis_kind: str, plan: BenchPlan, carts: int
) -> CartReadsReport:
    """Migrate, seed through the service, then time cached and uncached reads, interleaved."""
    await asyncio.to_thread(upgrade, database_url, discover_services()["cart"])
    engine = create_engine(
        cart.CartSettings(database_url=database_url, db_pool_size=plan.concurrency)
    )
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    channels = max(1, min(plan.concurrency, 8))
    try:
        async with (
            cart_server(engine, cache_url, cached=True, prefix=prefix) as cached,
            cart_server(engine, cache_url, cached=False, prefix=prefix) as uncached,
            stubs_for(cached, channels) as cached_stubs,
            stubs_for(uncached, channels) as uncached_stubs,
        ):
            seeded = await seed(uncached_stubs[0], carts)
            phases: list[PhaseResult] = []
            line = ProgressLine("cart read phases", 2 * plan.rounds)
            for round_number in range(1, plan.rounds + 1):
                for name, stubs in (("cached", cached_stubs), ("uncached", uncached_stubs)):
                    attempt = cart_reads(stubs, seeded)
                    phases.append(await run_phase(name, round_number, attempt, plan))
                    line.update(len(phases))
    finally:
        await engine.dispose()
    rate = {
        name: statistics.median(p.per_second for p in phases if p.phase == name)
        for name in ("cached", "uncached")
    }
    return CartReadsReport(
        plan=plan,
        carts=carts,
        phases=tuple(phases),
        cached_per_second=rate["cached"],
        uncached_per_second=rate["uncached"],
        cached_over_uncached=rate["cached"] / rate["uncached"] if rate["uncached"] else 0.0,
        redis=redis_kind,
    )


def report_lines(report: CartReadsReport) -> list[str]:
    """The table and the one-line ratio."""
    plan = report.plan
    lines = [
        f"cart reads: {report.carts} carts of {LINES_PER_CART} lines; Redis {report.redis}",
        f"{'phase':<9}{'round':>6}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}",
    ]
    for result in report.phases:
        lines.append(
            f"{result.phase:<9}{result.round:>6}{result.per_second:>10.0f}"
            f"{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}{result.errors + result.refused:>8}"
        )
        lines.extend(f"  {result.phase} failure: {failure}" for failure in result.failures)
    lines.append(
        f"cached/uncached = {report.cached_over_uncached:.2f} "
        f"(cached {report.cached_per_second:.0f}/s, uncached {report.uncached_per_second:.0f}/s; "
        f"concurrency {plan.concurrency}, {plan.rounds} rounds of {plan.seconds:g}s)"
    )
    return lines


def report_json(report: CartReadsReport) -> str:
    """The report's figures as JSON."""
    figures: dict[str, Any] = asdict(report)
    figures["plan"]["json_path"] = str(report.plan.json_path) if report.plan.json_path else None
    return json.dumps(figures, indent=2)


async def bench(plan: BenchPlan, carts: int, settings: CartBenchSettings) -> CartReadsReport:
    """Run the whole benchmark on a fresh database and return its figures."""
    postgres = PostgresSettings(database_url=settings.database_url)
    async with (
        redis_server(settings) as (cache_url, redis_kind),
        postgres_server(postgres) as (server_url, _),
        fresh_database(server_url) as database_url,
    ):
        return await measure(database_url, cache_url, redis_kind, plan, carts)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the benchmark on uvloop, print it, and write JSON if asked."""
    plan, carts = parse_plan(argv)
    report = uvloop.run(bench(plan, carts, CartBenchSettings()))
    print("\n".join(report_lines(report)))
    if plan.json_path is not None:
        plan.json_path.write_text(report_json(report) + "\n")


if __name__ == "__main__":
    main()
