"""Typed settings: read from the environment once, development defaults refused in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from marketplace_platform.settings import AppEnv, ServiceSettings, to_asyncpg_url


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_PORT", "50123")
    monkeypatch.setenv("APP_ENV", "test")
    settings = ServiceSettings()
    assert (settings.grpc_port, settings.app_env) == (50123, AppEnv.TEST)


def test_production_refuses_the_development_database_and_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ValidationError, match="DATABASE_URL, REDIS_URL"):
        ServiceSettings(app_env=AppEnv.PRODUCTION)


def test_production_accepts_explicit_endpoints() -> None:
    settings = ServiceSettings(
        app_env=AppEnv.PRODUCTION,
        database_url="postgresql://checkout@db.internal:5432/checkout",
        redis_url="rediss://cache.internal:6379/0",
    )
    assert settings.sqlalchemy_url == "postgresql+asyncpg://checkout@db.internal:5432/checkout"


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(ValidationError, match="grpc_port"):
        ServiceSettings(grpc_port=70000)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        (
            "postgresql://postgres:@/db?host=/tmp/s",
            "postgresql+asyncpg://postgres:@/db?host=/tmp/s",
        ),
    ],
)
def test_database_urls_name_the_asyncpg_driver(given: str, expected: str) -> None:
    assert to_asyncpg_url(given) == expected
