"""Token checks: signature, expiry, required claims, algorithm, scopes; the production secret."""

from __future__ import annotations

import time

import jwt
import pytest
from pydantic import ValidationError

from gateway.auth import (
    ADMIN_SCOPE,
    Forbidden,
    Principal,
    Unauthenticated,
    authenticate,
    issue_token,
)
from gateway.settings import DEV_JWT_SECRET, GatewaySettings
from marketplace_platform.settings import AppEnv

SECRET = "unit-test-secret-0123456789abcdefghijkl-long-enough-for-hs512-too"


def header(token: str) -> str:
    return f"Bearer {token}"


def test_a_valid_token_gives_its_subject_and_scopes() -> None:
    token = issue_token(secret=SECRET, subject="cust-1", scopes=("admin", "orders"))
    principal = authenticate(header(token), secret=SECRET)
    assert principal == Principal("cust-1", frozenset({"admin", "orders"}))


def test_a_token_without_scope_has_none() -> None:
    token = jwt.encode({"sub": "c", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert authenticate(header(token), secret=SECRET).scopes == frozenset()


@pytest.mark.parametrize("value", [None, "", "Bearer", "Bearer   ", "Basic abc", "token-alone"])
def test_a_missing_or_malformed_header_is_refused(value: str | None) -> None:
    with pytest.raises(Unauthenticated):
        authenticate(value, secret=SECRET)


def test_a_bad_signature_is_refused() -> None:
    token = issue_token(secret="some-other-secret-0123456789abcdefgh", subject="c")
    with pytest.raises(Unauthenticated, match="signature"):
        authenticate(header(token), secret=SECRET)


def test_an_expired_token_is_refused() -> None:
    token = issue_token(secret=SECRET, subject="c", now=time.time() - 120, ttl_seconds=60)
    with pytest.raises(Unauthenticated, match="expired"):
        authenticate(header(token), secret=SECRET)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "c"},  # no exp: a token that never expires is not accepted
        {"exp": 4_000_000_000},  # no sub: no customer
        {"sub": "", "exp": 4_000_000_000},
        {"sub": "x" * 129, "exp": 4_000_000_000},
        {"sub": 42, "exp": 4_000_000_000},
        {"sub": "c", "exp": 4_000_000_000, "scope": ["admin"]},
    ],
)
def test_tokens_missing_or_misusing_claims_are_refused(claims: dict[str, object]) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated):
        authenticate(header(token), secret=SECRET)


def test_only_hs256_is_accepted() -> None:
    token = jwt.encode({"sub": "c", "exp": 4_000_000_000}, SECRET, algorithm="HS512")
    with pytest.raises(Unauthenticated):
        authenticate(header(token), secret=SECRET)
    unsigned = jwt.encode({"sub": "c", "exp": 4_000_000_000}, "", algorithm="none")
    with pytest.raises(Unauthenticated):
        authenticate(header(unsigned), secret=SECRET)


def test_the_admin_scope_is_required_where_asked() -> None:
    Principal("c", frozenset({ADMIN_SCOPE})).require(ADMIN_SCOPE)
    with pytest.raises(Forbidden):
        Principal("c", frozenset({"orders", "administrator"})).require(ADMIN_SCOPE)


def test_production_refuses_the_development_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6379/0")
    monkeypatch.delenv("GATEWAY_JWT_SECRET", raising=False)
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(ValidationError, match="GATEWAY_JWT_SECRET"):
        GatewaySettings()
    monkeypatch.setenv("GATEWAY_JWT_SECRET", "a-real-secret-from-the-vault-0123456789")
    assert GatewaySettings().gateway_jwt_secret != DEV_JWT_SECRET


def test_development_uses_the_built_in_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_JWT_SECRET", raising=False)
    monkeypatch.setenv("APP_ENV", "development")
    settings = GatewaySettings()
    assert settings.app_env is AppEnv.DEVELOPMENT
    assert settings.gateway_jwt_secret == DEV_JWT_SECRET
    assert settings.gateway_port == 8080
