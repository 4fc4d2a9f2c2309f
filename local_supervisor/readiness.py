"""Readiness checks: the standard gRPC health check for services, PING for Redis, and an HTTP
GET answering 200 for HTTP processes (the gateway, the PSP simulator)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

# Fast reconnects: after a restart the service is back within a second, and the default
# gRPC backoff (up to two minutes) would make the supervisor notice it much later.
_CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True)
class GrpcHealthCheck:
    """Ask `target`'s grpc.health.v1.Health service about `service` ("" is the whole server)."""

    target: str
    service: str = ""

    @property
    def address(self) -> str:
        """Where the process listens."""
        return self.target


@dataclass(frozen=True)
class RedisPingCheck:
    """Send PING to a Redis server and expect PONG."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """Where the process listens."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class HttpReadyCheck:
    """GET `path` on an HTTP server and expect 200."""

    host: str
    port: int
    path: str

    @property
    def address(self) -> str:
        """Where the process listens."""
        return f"{self.host}:{self.port}"


ReadinessCheck = GrpcHealthCheck | RedisPingCheck | HttpReadyCheck


@dataclass(frozen=True)
class Readiness:
    """One answer of a readiness check: ready or not, and what was seen."""

    ready: bool
    detail: str


class ReadinessProber:
    """Runs readiness checks, keeping one gRPC channel per target between polls."""

    def __init__(self, *, timeout: float = 1.0) -> None:
        self._timeout = timeout
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def check(self, check: ReadinessCheck) -> Readiness:
        """Run one check once."""
        if isinstance(check, GrpcHealthCheck):
            return await self._check_grpc_health(check)
        if isinstance(check, HttpReadyCheck):
            return await self._get_http(check)
        return await self._ping_redis(check)

    async def close(self) -> None:
        """Close the gRPC channels."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    async def _check_grpc_health(self, check: GrpcHealthCheck) -> Readiness:
        # Imported here, not at module level: grpc reads GRPC_ENABLE_FORK_SUPPORT when it is
        # first imported, and the supervisor sets it before that (see session.quiet_grpc_fork).
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        channel = self._channels.get(check.target)
        if channel is None:
            channel = grpc.aio.insecure_channel(check.target, options=_CHANNEL_OPTIONS)
            self._channels[check.target] = channel
        stub: Any = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=check.service)
        try:
            response = await stub.Check(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            return Readiness(ready=False, detail=error.code().name)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return Readiness(
            ready=response.status == health_pb2.HealthCheckResponse.SERVING, detail=status
        )

    async def _ping_redis(self, check: RedisPingCheck) -> Readiness:
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await asyncio.open_connection(check.host, check.port)
                try:
                    writer.write(b"PING\r\n")
                    answer = await reader.readline()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as error:
            return Readiness(ready=False, detail=type(error).__name__)
        if answer.strip() == b"+PONG":
            return Readiness(ready=True, detail="answering PING")
        return Readiness(ready=False, detail=answer.decode(errors="replace").strip() or "no answer")

    async def _get_http(self, check: HttpReadyCheck) -> Readiness:
        request = f"GET {check.path} HTTP/1.1\r\nHost: {check.address}\r\nConnection: close\r\n\r\n"
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await asyncio.open_connection(check.host, check.port)
                try:
                    writer.write(request.encode())
                    status_line = await reader.readline()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as error:
            return Readiness(ready=False, detail=type(error).__name__)
        parts = status_line.decode(errors="replace").split(" ", 2)
        status = parts[1] if len(parts) > 1 else "no answer"
        return Readiness(ready=status == "200", detail=f"GET {check.path}: {status}")
