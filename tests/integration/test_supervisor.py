"""The local supervisor with real processes: tiny gRPC servers, embedded Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import grpc
import psutil
import pytest
import redis.asyncio as redis_client
from grpc_health.v1 import health_pb2, health_pb2_grpc

from local_supervisor.console import PrefixedConsole
from local_supervisor.embedded import EmbeddedPostgres, free_port, redis_server_spec, redis_url
from local_supervisor.launcher import StackExited, StackNotReady, free_ports, launched_stack
from local_supervisor.processes import Supervisor
from local_supervisor.session import READY_MARK

REPO = Path(__file__).resolve().parents[2]
WITHIN = 15.0  # seconds any one awaited event may take before the test fails

# A stand-in service: the standard gRPC health service, SERVING, on the port it is given.
# It writes one line in two pieces to show the supervisor never splits a line.
GRPC_CHILD = textwrap.dedent(
    """
    import asyncio, signal, sys
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    async def main(port):
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        sys.stdout.write("half a ")
        sys.stdout.flush()
        await asyncio.sleep(0.2)
        print(f"line, listening on {port}", flush=True)
        await stopping.wait()
        await server.stop(1)
        print("bye", flush=True)

    asyncio.run(main(int(sys.argv[1])))
    """
)

# A process that ignores SIGTERM, so the supervisor has to SIGKILL it.
STUBBORN_CHILD = textwrap.dedent(
    """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring SIGTERM", flush=True)
    while True:
        time.sleep(60)
    """
)

# The supervisor core run as its own process, on a process list given as JSON.
SUPERVISOR_RUNNER = textwrap.dedent(
    """
    import contextlib, json, os, sys
    from pathlib import Path
    from local_supervisor.console import PrefixedConsole
    from local_supervisor.processes import ProcessSpec, Supervisor
    from local_supervisor.readiness import GrpcHealthCheck
    from local_supervisor.session import StackPlan, quiet_grpc_fork, run_event_loop, supervise

    READY_TIMEOUT = 15.0

    def main():
        config = json.loads(sys.argv[1])
        base_env = dict(os.environ)
        quiet_grpc_fork()
        specs = [
            ProcessSpec(
                name=p["name"],
                argv=p["argv"],
                readiness=GrpcHealthCheck(p["address"]) if p.get("address") else None,
            )
            for p in config["processes"]
        ]
        console = PrefixedConsole(sys.stdout)

        @contextlib.asynccontextmanager
        async def prepare(supervisor):
            yield StackPlan(services=specs, resources={"DATABASE_URL": "postgresql://x:***@h/db"})

        async def run():
            supervisor = Supervisor(
                console=console,
                base_env=base_env,
                state_file=Path(config["state_file"]),
                stop_grace=config["stop_grace"],
            )
            return await supervise(
                prepare, supervisor=supervisor, console=console, ready_timeout=READY_TIMEOUT
            )

        return run_event_loop(run())

    sys.exit(main())
    """
)


@dataclass
class SupervisorRun:
    """A supervisor subprocess, with every line it printed so far."""

    process: asyncio.subprocess.Process
    state_file: Path
    ports: dict[str, int]
    lines: list[str] = field(default_factory=list)
    new_line: asyncio.Event = field(default_factory=asyncio.Event)

    async def read_output(self) -> None:
        """Collect the supervisor's stdout line by line until it closes."""
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self.new_line.set()
        self.new_line.set()

    async def wait_for_line(self, pattern: str, *, after: int = 0) -> str:
        """The first line (from index `after`) matching `pattern`; fail after WITHIN seconds."""
        regex = re.compile(pattern)
        try:
            async with asyncio.timeout(WITHIN):
                while True:
                    self.new_line.clear()
                    for line in self.lines[after:]:
                        if regex.search(line):
                            return line
                    if self.process.stdout is not None and self.process.stdout.at_eof():
                        break
                    await self.new_line.wait()
        except TimeoutError:
            pass
        pytest.fail(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))

    def state(self) -> dict[str, Any]:
        """The supervisor's state file, parsed."""
        document: dict[str, Any] = json.loads(self.state_file.read_text())
        return document

    def pids(self) -> dict[str, int]:
        """Each process's pid from the state file."""
        return {entry["name"]: entry["pid"] for entry in self.state()["processes"]}


@pytest.fixture
async def supervisor_run(tmp_path: Path) -> AsyncIterator[SupervisorRun]:
    """A supervisor running two gRPC stand-ins and one SIGTERM-ignoring process."""
    ports = {"alpha": free_port(), "beta": free_port()}
    processes = [
        {
            "name": name,
            "argv": [sys.executable, "-c", GRPC_CHILD, str(port)],
            "address": f"127.0.0.1:{port}",
        }
        for name, port in ports.items()
    ]
    processes.append({"name": "stubborn", "argv": [sys.executable, "-c", STUBBORN_CHILD]})
    state_file = tmp_path / "run" / "supervisor.json"
    config = {"processes": processes, "state_file": str(state_file), "stop_grace": 1.0}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SUPERVISOR_RUNNER,
        json.dumps(config),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    run = SupervisorRun(process=process, state_file=state_file, ports=ports)
    reader = asyncio.create_task(run.read_output())
    try:
        await run.wait_for_line(r"^supervisor +\| all services SERVING in \d+\.\ds$")
        yield run
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(WITHIN):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        await reader


async def test_starts_processes_reports_them_serving_and_prefixes_output(
    supervisor_run: SupervisorRun,
) -> None:
    alpha_port = supervisor_run.ports["alpha"]

    whole_line = await supervisor_run.wait_for_line(rf"listening on {alpha_port}$")
    table_row = await supervisor_run.wait_for_line(r"^supervisor +\| beta ")

    assert whole_line == f"{'alpha':<10} | half a line, listening on {alpha_port}"
    assert f"127.0.0.1:{supervisor_run.ports['beta']}" in table_row
    assert await supervisor_run.wait_for_line(r"^stubborn +\| ignoring SIGTERM$")
    state = supervisor_run.state()
    assert [entry["name"] for entry in state["processes"]] == ["alpha", "beta", "stubborn"]
    assert state["processes"][0]["address"] == f"127.0.0.1:{alpha_port}"
    assert state["supervisor_pid"] == supervisor_run.process.pid
    assert await _health_status(alpha_port) == health_pb2.HealthCheckResponse.SERVING


async def test_restarts_a_killed_child_and_says_so(supervisor_run: SupervisorRun) -> None:
    killed_pid = supervisor_run.pids()["alpha"]
    mark = len(supervisor_run.lines)

    os.kill(killed_pid, signal.SIGKILL)

    await supervisor_run.wait_for_line(
        r"^supervisor +\| alpha exited with signal SIGKILL; restarting in 0\.5s \(restart 1\)$",
        after=mark,
    )
    await supervisor_run.wait_for_line(
        r"^supervisor +\| alpha is SERVING again \(pid \d+\)$", after=mark
    )
    await _poll(lambda: supervisor_run.pids()["alpha"] not in (None, killed_pid), "new pid")
    assert supervisor_run.state()["processes"][0]["restarts"] == 1
    assert await _health_status(supervisor_run.ports["alpha"]) == (
        health_pb2.HealthCheckResponse.SERVING
    )


async def test_sigterm_stops_every_child_and_exits_zero(supervisor_run: SupervisorRun) -> None:
    children = list(supervisor_run.pids().values())
    for port in supervisor_run.ports.values():
        await supervisor_run.wait_for_line(rf"listening on {port}$")

    supervisor_run.process.send_signal(signal.SIGTERM)

    async with asyncio.timeout(WITHIN):
        returncode = await supervisor_run.process.wait()
    assert returncode == 0, "\n".join(supervisor_run.lines)
    await supervisor_run.wait_for_line(r"^alpha +\| bye$")
    await supervisor_run.wait_for_line(r"stubborn still running \(after 1s\); sending SIGKILL$")
    await supervisor_run.wait_for_line(r"stubborn exited with signal SIGKILL$")
    await _poll(lambda: not any(_alive(pid) for pid in children), "children gone")
    assert not supervisor_run.state_file.exists()


async def test_children_die_with_a_killed_supervisor(supervisor_run: SupervisorRun) -> None:
    children = list(supervisor_run.pids().values())

    supervisor_run.process.kill()

    await _poll(lambda: not any(_alive(pid) for pid in children), "children gone")


async def test_embedded_redis_keeps_data_across_a_restart(tmp_path: Path) -> None:
    async def with_redis(use: Callable[[redis_client.Redis], Any]) -> Any:
        port = free_port()
        supervisor = Supervisor(console=PrefixedConsole(io.StringIO()), base_env=os.environ)
        supervisor.launch([redis_server_spec(tmp_path / "redis", port=port)])
        try:
            answers = await supervisor.wait_until_ready(within=WITHIN)
            assert answers["redis"].ready, answers
            client = redis_client.Redis.from_url(redis_url(port))
            try:
                return await use(client)
            finally:
                await client.aclose()
        finally:
            await supervisor.stop()

    await with_redis(lambda client: client.set("cart:42", "3 items"))
    stored = await with_redis(lambda client: client.get("cart:42"))

    assert stored == b"3 items"


async def test_embedded_postgres_keeps_data_across_a_restart(tmp_path: Path) -> None:
    postgres = await EmbeddedPostgres.start(tmp_path / "postgres")
    try:
        connection = await asyncpg.connect(postgres.database_url)
        try:
            await connection.execute("CREATE TABLE reservations (id text PRIMARY KEY)")
            await connection.execute("INSERT INTO reservations VALUES ('res_1')")
        finally:
            await connection.close()
    finally:
        await postgres.stop()

    postgres = await EmbeddedPostgres.start(tmp_path / "postgres")
    try:
        connection = await asyncpg.connect(postgres.database_url)
        try:
            ids = await connection.fetch("SELECT id FROM reservations")
        finally:
            await connection.close()
    finally:
        await postgres.stop()

    assert postgres.database_url.startswith("postgresql://postgres:@/marketplace?host=")
    assert [row["id"] for row in ids] == ["res_1"]


async def test_the_launcher_fails_fast_with_the_supervisors_last_lines(tmp_path: Path) -> None:
    ports = free_ports()
    with socket.socket() as squatter:  # something else already listens on the gateway's port
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", ports.http_ports["gateway"]))
        squatter.listen()
        log = tmp_path / "supervisor.log"
        with pytest.raises(StackNotReady, match=r"exited \(1\)[^\n]*\n(.|\n)*already in use"):
            async with launched_stack(
                database_url="postgresql://unused",
                data_dir=tmp_path,
                ports=ports,
                ready_within=60,
                log_path=log,
            ):
                pytest.fail("entered a stack that never became ready")
        assert f"gateway ({ports.http_ports['gateway']})" in log.read_text()

        async with launched_stack(
            database_url="postgresql://unused", data_dir=tmp_path, ports=ports
        ) as stack:  # entered at once: waiting is the caller's
            with pytest.raises(StackExited):
                await stack.wait_for_line(READY_MARK, within=60)
            assert "already in use" in await stack.wait_for_line("already in use", within=1)
            assert stack.process.returncode == 1
            assert stack.processes() == {}


async def _health_status(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the stub types lack aio methods
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        status: int = response.status
        return status


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _poll(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail after WITHIN seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
