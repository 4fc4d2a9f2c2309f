"""Processes of ours that hold live gRPC channels fork only to exec: the supervisor starting
and restarting its children (with a preexec hook), pg_ctl run as PostgreSQL's own user by the
embedded server. gRPC's fork handlers are not wanted there, and grpcio >= 1.81's crash a child
between fork and exec (grpc/grpc#43055; CI: "pg_ctl ... died with SIGSEGV"). A fresh
interpreter that imports our code as an entry point does, with gRPC calls in flight, forks
children both ways: every one of them must exec."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from local_supervisor.launcher import REPO

FORKS = 150
# The entry point's imports come first, as in `python -m local_supervisor`; then gRPC traffic
# on four tasks while children are forked from a worker thread.
SCRIPT = textwrap.dedent(
    """
    import asyncio, subprocess, sys
    import local_supervisor.processes
    from local_supervisor.parent_death import die_with_supervisor_hook
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    async def main(forks, how):
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = health_pb2_grpc.HealthStub(channel)
        done = asyncio.Event()

        async def chatter():
            while not done.is_set():
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)

        def child():
            hook = {"preexec_fn": die_with_supervisor_hook()}
            options = {"user": "nobody"} if how == "user" else hook
            return subprocess.run(["/bin/true"], capture_output=True, **options).returncode

        talkers = [asyncio.create_task(chatter()) for _ in range(4)]
        codes = [await asyncio.to_thread(child) for _ in range(forks)]
        done.set()
        await asyncio.gather(*talkers)
        await channel.close()
        await server.stop(None)
        print(sum(code != 0 for code in codes), sorted(set(codes)))

    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
    """
)


def children_that_died(how: str) -> str:
    """What the script printed: how many of its children did not exec, and their codes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_ENABLE_FORK")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(FORKS), how],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_children_forked_with_the_supervisors_hook_beside_live_grpc_calls_all_exec() -> None:
    assert children_that_died("preexec") == "0 [0]"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user (as pgserver runs pg_ctl) needs root")
def test_children_forked_as_another_user_beside_live_grpc_calls_all_exec() -> None:
    assert children_that_died("user") == "0 [0]"
