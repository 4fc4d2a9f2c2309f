"""The machine's own baselines for the checkout benchmark, measured in the same run.

pgbench `-N` (simple-update transactions per second) on the same PostgreSQL server, and the
calls per second of a bare `grpc.aio` unary echo (server in its own process, 32 calls in flight).
`python -m bench.checkout_baselines echo-server PORT` is that echo server.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import grpc
from sqlalchemy.engine import make_url

from local_supervisor.embedded import free_port

ECHO_METHOD = "/bench.Echo/Ping"
ECHO_IN_FLIGHT = 32
Ping = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
TPS_LINE = re.compile(r"tps = ([0-9.]+) \((?:without initial connection time|excluding)")


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """One baseline figure, or why there is none."""

    name: str
    per_second: float | None
    detail: str


def pgbench_binary() -> str | None:
    """A pgbench client: pgserver's bundled one, else the machine's."""
    candidates = []
    try:
        import pgserver

        candidates.append(Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench")
    except ImportError:  # pragma: no cover - pgserver is a dependency
        pass
    found = shutil.which("pgbench")
    if found:
        candidates.append(Path(found))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))]
    return next((str(p) for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


async def pgbench_simple_update(server_url: str, *, seconds: int, scale: int) -> Baseline:
    """pgbench -N -c 8 -j 2 on a scratch database of the same server, dropped afterwards."""
    binary = pgbench_binary()
    if binary is None:
        return Baseline(name="pgbench -N", per_second=None, detail="unavailable: no pgbench")
    name = f"bench_pgbench_{uuid.uuid4().hex[:10]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        url = make_url(server_url).set(database=name)
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        await _pgbench(binary, "-i", "-q", "-s", str(scale), conninfo)
        output = await _pgbench(binary, "-N", "-c", "8", "-j", "2", "-T", str(seconds), conninfo)
    finally:
        await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    match = TPS_LINE.search(output)
    if match is None:
        return Baseline(name="pgbench -N", per_second=None, detail=f"unparsed: {output[-300:]}")
    detail = f"{binary} -N -c 8 -j 2 -T {seconds}, scale {scale}"
    return Baseline(name="pgbench -N", per_second=float(match.group(1)), detail=detail)


async def _admin(server_url: str, statement: str) -> None:
    # A connection per statement: one held idle through a long pgbench run may be cut.
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _pgbench(binary: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        binary,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args[:-1])} failed: {text[-500:]}")
    return text


async def grpc_echo_calls(*, seconds: float) -> Baseline:
    """Unary calls per second of a bare grpc.aio echo server in its own process."""
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.checkout_baselines", "echo-server", str(port),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
    )  # fmt: skip
    try:
        assert server.stdout is not None
        async with asyncio.timeout(30):
            await server.stdout.readline()  # "serving"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            ping: Ping = channel.unary_unary(ECHO_METHOD)
            await ping(b"warm", timeout=5)
            calls = await _drive(ping, seconds=seconds)
    finally:
        server.terminate()
        await server.wait()
    detail = f"unary echo, {ECHO_IN_FLIGHT} in flight, server in its own process"
    return Baseline(name="grpc.aio ping", per_second=calls / seconds, detail=detail)


async def _drive(ping: Ping, *, seconds: float) -> int:
    ends = time.perf_counter() + seconds
    counts = [0] * ECHO_IN_FLIGHT

    async def caller(index: int) -> None:
        while time.perf_counter() < ends:
            await ping(b"ping", timeout=5)
            counts[index] += 1

    await asyncio.gather(*(caller(index) for index in range(ECHO_IN_FLIGHT)))
    return sum(counts)


async def _serve_echo(port: int) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Ping": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


def main(argv: list[str]) -> None:
    """`echo-server PORT`: serve the echo method until terminated."""
    if len(argv) != 2 or argv[0] != "echo-server":
        raise SystemExit("usage: python -m bench.checkout_baselines echo-server PORT")
    import uvloop

    uvloop.run(_serve_echo(int(argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
