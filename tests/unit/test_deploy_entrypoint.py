"""The containers' entry point (URLs built from Secrets Manager parts) and health check (against
a real gRPC health service and a real HTTP server on port 0)."""

from __future__ import annotations

import http.server
import importlib.util
import socket
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url

from marketplace_platform.settings import to_asyncpg_url

REPO = Path(__file__).resolve().parents[2]


def load(name: str) -> ModuleType:
    """deploy/docker/<name>.py as a module (the images run them as scripts)."""
    spec = importlib.util.spec_from_file_location(
        f"container_{name}", REPO / f"deploy/docker/{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


entrypoint = load("entrypoint")
healthcheck = load("healthcheck")

AWKWARD_PASSWORD = "p@ss:w/rd?#%&+ =~ü"


def test_the_database_url_carries_any_password_intact() -> None:
    env = {
        "DB_HOST": "writer.cluster-x.eu-west-1.rds.amazonaws.com",
        "DB_PORT": "5432",
        "DB_NAME": "marketplace",
        "DB_USERNAME": "checkout",
        "DB_PASSWORD": AWKWARD_PASSWORD,
    }

    url = make_url(entrypoint.database_url(env))

    assert url.password == AWKWARD_PASSWORD
    assert url.username == "checkout"
    assert url.host == env["DB_HOST"]
    assert url.port == 5432
    assert url.database == "marketplace"
    assert url.query["ssl"] == "require"


def test_the_database_url_follows_the_writer_over_tls() -> None:
    # Aurora's cluster endpoint is a DNS name moved to the new writer on a failover; a cached
    # address of the old writer (now a reader) must be refused, not written to.
    env = {"DB_HOST": "writer.cluster-x.eu-west-1.rds.amazonaws.com", "DB_USERNAME": "u"}
    url = entrypoint.database_url(env | {"DB_PASSWORD": AWKWARD_PASSWORD})
    assert url is not None

    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    _, params = dialect.create_connect_args(make_url(to_asyncpg_url(url)))  # type: ignore[no-untyped-call]

    assert params["target_session_attrs"] == "read-write"
    assert params["ssl"] == "require"
    assert params["host"] == env["DB_HOST"]
    assert params["password"] == AWKWARD_PASSWORD


def test_the_redis_url_uses_tls_and_the_token() -> None:
    url = urlsplit(
        entrypoint.redis_url({"REDIS_HOST": "master.cache.example", "REDIS_AUTH_TOKEN": "t0k/en"})
    )

    assert url.scheme == "rediss"
    assert url.hostname == "master.cache.example"
    assert url.port == 6379
    assert url.password == "t0k%2Fen"  # percent-encoded once; redis-py unquotes it


def test_the_process_gets_the_urls_and_not_the_secret_parts() -> None:
    env = {
        "DB_HOST": "db",
        "DB_USERNAME": "u",
        "DB_PASSWORD": "secret",
        "REDIS_HOST": "cache",
        "REDIS_AUTH_TOKEN": "token",
        "APP_ENV": "production",
    }

    built = entrypoint.process_environment(env)

    assert built["DATABASE_URL"].startswith("postgresql://u:secret@db:5432/")
    assert built["REDIS_URL"] == "rediss://:token@cache:6379/0"
    assert "DB_PASSWORD" not in built
    assert "REDIS_AUTH_TOKEN" not in built
    assert built["APP_ENV"] == "production"


def test_urls_already_given_are_left_alone() -> None:
    env = {"DATABASE_URL": "postgresql://given", "REDIS_URL": "redis://given", "DB_HOST": "db"}

    built = entrypoint.process_environment(env)

    assert built["DATABASE_URL"] == "postgresql://given"
    assert built["REDIS_URL"] == "redis://given"
    assert entrypoint.process_environment({}) == {}


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(None)


def test_the_grpc_probe_follows_the_health_service(
    health_server: tuple[int, health.HealthServicer],
) -> None:
    port, servicer = health_server

    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.healthy(["grpc", str(port)])
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert not healthcheck.healthy(["grpc", str(port)])


def test_the_grpc_probe_fails_when_nothing_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    assert not healthcheck.healthy(["grpc", str(closed_port)])


class _Healthz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_the_http_probe_wants_200_from_healthz() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert healthcheck.healthy(["http", str(port)])
        _Healthz.status = 503
        assert not healthcheck.healthy(["http", str(port)])
    finally:
        _Healthz.status = 200
        server.shutdown()
        server.server_close()
    assert not healthcheck.http_ok(port)  # and nothing answers once it is gone


def test_the_worker_probe_reads_pid_1(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"python\0-m\0workers.outbox_relay\0")
    assert healthcheck.worker_alive(cmdline)
    cmdline.write_bytes(b"python\0/app/deploy/docker/entrypoint.py\0")
    assert not healthcheck.worker_alive(cmdline)
    assert not healthcheck.worker_alive(tmp_path / "missing")
