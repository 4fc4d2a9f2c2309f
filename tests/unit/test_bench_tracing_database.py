"""bench.checkout_tracing leaves the other stack's PostgreSQL backends out of a stack's CPU by
database name: the name read from both kinds of URL the benchmark is given."""

from __future__ import annotations

import pytest

from bench.checkout_tracing import database_name


@pytest.mark.parametrize(
    ("url", "name"),
    [
        # An embedded server's (pgserver): the socket folder, slashes and all, in the query.
        (
            "postgresql://postgres:@/bench_1a2b3c4d5e6f?host=/tmp/bench-pg-x/pgdata",
            "bench_1a2b3c4d5e6f",
        ),
        ("postgresql://postgres@127.0.0.1:5432/bench_0f0f0f0f0f0f", "bench_0f0f0f0f0f0f"),
    ],
)
def test_the_database_name_is_read_from_the_url(url: str, name: str) -> None:
    assert database_name(url) == name


def test_a_url_without_a_database_is_refused() -> None:
    with pytest.raises(ValueError, match="no database"):
        database_name("postgresql://postgres@127.0.0.1:5432")
