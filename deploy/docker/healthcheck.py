"""Container health check, for Docker's HEALTHCHECK and the ECS task definition's healthCheck.

    healthcheck.py grpc <port>   the gRPC health service answers SERVING for ""
    healthcheck.py http <port>   GET /healthz answers 200
    healthcheck.py worker        PID 1 is still a `python -m` process (liveness only)

Exit 0 when healthy, 1 otherwise, within a 4 second deadline.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEADLINE_SECONDS = 4.0


def grpc_serving(port: int) -> bool:
    """Whether the gRPC health service on 127.0.0.1:port says SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' typing lacks Check
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_SECONDS)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(port: int) -> bool:
    """Whether GET http://127.0.0.1:port/healthz answers 200."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/healthz", timeout=DEADLINE_SECONDS
        ) as response:
            return int(response.status) == 200
    except OSError:
        return False


def worker_alive(proc: Path = Path("/proc/1/cmdline")) -> bool:
    """Whether PID 1 is a `python -m <module>` process (the worker, after the entry point)."""
    try:
        argv = proc.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"-m" in argv


def healthy(args: Sequence[str]) -> bool:
    """Run the probe the arguments name."""
    match list(args):
        case ["grpc", port]:
            return grpc_serving(int(port))
        case ["http", port]:
            return http_ok(int(port))
        case ["worker"]:
            return worker_alive()
    raise SystemExit(f"unknown probe: {' '.join(args)}")


if __name__ == "__main__":
    sys.exit(0 if healthy(sys.argv[1:]) else 1)
