"""The endpoint that follows the writer, as each of its readers parses it (SQLAlchemy's asyncpg
dialect for the services' engines and migrations, asyncpg itself for LISTEN connections and the
harness), and which failures mean the writer is lost (marketplace_platform.db.writer_lost)."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest
from asyncpg.connect_utils import _parse_connect_dsn_and_args  # type: ignore[import-untyped]
from sqlalchemy import exc
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url

from marketplace_platform.db import NoWriter, writer_lost
from marketplace_platform.settings import to_asyncpg_url
from verification.replica import writer_endpoint

URL = writer_endpoint([5433, 5434], "marketplace")


def test_the_endpoint_names_every_host_and_asks_for_a_writer() -> None:
    assert URL == (
        "postgresql://postgres@/marketplace"
        "?host=127.0.0.1,127.0.0.1&port=5433,5434&target_session_attrs=read-write"
    )


def test_sqlalchemys_asyncpg_dialect_connects_to_both_hosts_for_a_writer() -> None:
    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    _, params = dialect.create_connect_args(make_url(to_asyncpg_url(URL)))  # type: ignore[no-untyped-call]
    assert params["host"] == ["127.0.0.1", "127.0.0.1"]
    assert params["port"] == [5433, 5434]
    assert params["target_session_attrs"] == "read-write"
    assert params["database"] == "marketplace"


def test_asyncpg_reads_the_same_url_the_same_way() -> None:
    unset = dict.fromkeys(
        ("host", "port", "user", "password", "passfile", "database", "ssl", "service",
         "servicefile", "direct_tls", "server_settings", "target_session_attrs", "krbsrvname",
         "gsslib"),
    )  # fmt: skip
    addresses, params = _parse_connect_dsn_and_args(dsn=URL, **unset)
    assert addresses == [("127.0.0.1", 5433), ("127.0.0.1", 5434)]
    assert params.target_session_attrs.value == "read-write"
    assert params.database == "marketplace"


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        NoWriter("no writer reachable"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction"),  # 25006
        asyncpg.exceptions.AdminShutdownError("terminating connection"),  # 57P01
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),  # 08003
        asyncpg.exceptions.TargetServerAttributeNotMatched("none is read-write"),
        exc.DisconnectionError("the server closed this connection"),
    ],
)
def test_failures_that_mean_the_writer_is_lost(error: BaseException) -> None:
    assert writer_lost(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),  # 23505
        asyncpg.exceptions.QueryCanceledError("statement timeout"),  # 57014
        asyncpg.exceptions.SerializationError("could not serialize"),  # 40001
        ValueError("a bug"),
    ],
)
def test_failures_that_do_not(error: BaseException) -> None:
    assert not writer_lost(error)


def test_the_driver_error_behind_a_wrapped_one_counts() -> None:
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction")
    assert writer_lost(wrapped)
