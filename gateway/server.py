"""The gateway process: settings, JSON logs, uvicorn on uvloop + httptools, until SIGTERM."""

from __future__ import annotations

import logging
import shlex
import signal
import socket
from types import FrameType

import uvicorn

from gateway.app import build_app
from gateway.auth import ADMIN_SCOPE, issue_token
from gateway.settings import DEV_JWT_SECRET, GatewaySettings
from marketplace_platform.logs import configure_logging
from marketplace_platform.metrics import serve_metrics
from marketplace_platform.settings import TracingSettings
from marketplace_platform.telemetry import configure_tracing, traced_asgi

log = logging.getLogger(__name__)


def main() -> int:
    """Serve until SIGTERM or SIGINT (uvicorn drains connections first); return the exit code."""
    settings = GatewaySettings()
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(TracingSettings(service_name=settings.service_name))
    serve_metrics(settings.metrics_port, settings.metrics_host)
    config = uvicorn.Config(
        traced_asgi(build_app(settings)),
        host=settings.gateway_host,
        port=settings.gateway_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,  # RequestContext logs one line per request, with its request id
        server_header=False,
        timeout_graceful_shutdown=int(settings.gateway_shutdown_grace_seconds),
    )
    server = uvicorn.Server(config)
    log.info("gateway on http://%s:%d", settings.gateway_host, settings.gateway_port)
    if settings.gateway_jwt_secret == DEV_JWT_SECRET and settings.uses_shared_secret:
        log.info("try it: %s", curl_example(settings))
    _survive_stop_signals()
    if settings.gateway_reuse_port:
        server.run(sockets=[shared_socket(settings.gateway_host, settings.gateway_port)])
    else:
        server.run()
    return 0 if server.started else 1


def shared_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT, so that every zone's gateway binds the one
    port and the kernel spreads new connections over those that listen (one that dies takes
    only its own connections with it)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _survive_stop_signals() -> None:
    """Let a graceful stop end `main` with 0: uvicorn re-raises the signal it caught, and with
    the default handlers that would kill the process (exit 143) after it drained cleanly."""

    def stopped(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopped gracefully", signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stopped)


def curl_example(settings: GatewaySettings) -> str:
    """A ready-to-paste curl call with a fresh development token (development secret only)."""
    token = issue_token(
        secret=settings.gateway_jwt_secret,
        subject="customer-dev",
        scopes=(ADMIN_SCOPE,),
        ttl_seconds=3600,
    )
    url = f"http://{settings.gateway_host}:{settings.gateway_port}/v1/carts"
    return (
        f"curl -s -X POST {url} -H {shlex.quote('Authorization: Bearer ' + token)}"
        " -H 'Content-Type: application/json' -d '{}'"
    )
