"""Token checks: signature, expiry, lifetime, required claims, algorithm, scopes; which key
sources the settings turn on, and production's refusal of the development secret."""

from __future__ import annotations

import time

import jwt
import pytest
from pydantic import ValidationError

from gateway.auth import (
    ADMIN_SCOPE,
    Authenticator,
    Forbidden,
    Principal,
    SharedSecret,
    TokenRules,
    Unauthenticated,
    issue_token,
    principal_of,
)
from gateway.identity import authenticator_for
from gateway.settings import DEV_JWT_SECRET, GatewaySettings
from marketplace_platform.secrets import FixedSecret
from marketplace_platform.settings import AppEnv

SECRET = "unit-test-secret-0123456789abcdefghijkl-long-enough-for-hs512-too"
MAX_LIFETIME = 3600.0
JWKS_URL = "https://idp.example/.well-known/jwks.json"


def header(token: str) -> str:
    return f"Bearer {token}"


def claims(**extra: object) -> dict[str, object]:
    """A valid subject, issued now, living a minute, with `extra` on top (None removes)."""
    now = int(time.time())
    values: dict[str, object] = {"sub": "c", "iat": now, "exp": now + 60, **extra}
    return {name: value for name, value in values.items() if value is not None}


async def authenticate(authorization: str | None, *, secret: str = SECRET) -> Principal:
    source = SharedSecret(FixedSecret(secret).aget, TokenRules(MAX_LIFETIME))
    return await Authenticator([source]).authenticate(authorization)


async def test_a_valid_token_gives_its_subject_and_scopes() -> None:
    token = issue_token(secret=SECRET, subject="cust-1", scopes=("admin", "orders"))
    principal = await authenticate(header(token))
    assert principal == Principal("cust-1", frozenset({"admin", "orders"}))


async def test_a_token_without_scope_has_none() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert (await authenticate(header(token))).scopes == frozenset()


@pytest.mark.parametrize("value", [None, "", "Bearer", "Bearer   ", "Basic abc", "token-alone"])
async def test_a_missing_or_malformed_header_is_refused(value: str | None) -> None:
    with pytest.raises(Unauthenticated):
        await authenticate(value)


async def test_a_bad_signature_is_refused() -> None:
    token = issue_token(secret="some-other-secret-0123456789abcdefgh", subject="c")
    with pytest.raises(Unauthenticated, match="signature"):
        await authenticate(header(token))


async def test_an_expired_token_is_refused() -> None:
    token = issue_token(secret=SECRET, subject="c", now=time.time() - 120, ttl_seconds=60)
    with pytest.raises(Unauthenticated, match="expired"):
        await authenticate(header(token))


async def test_a_token_living_longer_than_the_maximum_is_refused() -> None:
    within = issue_token(secret=SECRET, subject="c", ttl_seconds=MAX_LIFETIME)
    assert (await authenticate(header(within))).customer_id == "c"
    longer = issue_token(secret=SECRET, subject="c", ttl_seconds=MAX_LIFETIME + 1)
    with pytest.raises(Unauthenticated, match="3601 s, more than the 3600 s"):
        await authenticate(header(longer))


async def test_a_token_not_valid_yet_is_refused() -> None:
    token = jwt.encode(claims(nbf=int(time.time()) + 30), SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="not valid yet"):
        await authenticate(header(token))


@pytest.mark.parametrize(
    "token_claims",
    [
        claims(exp=None),  # no exp: a token that never expires is not accepted
        claims(iat=None),  # no iat: its lifetime cannot be bounded
        claims(sub=None),  # no sub: no customer
        claims(sub=""),
        claims(sub="x" * 129),
        claims(sub=42),
        claims(scope=["admin"]),
    ],
)
async def test_tokens_missing_or_misusing_claims_are_refused(
    token_claims: dict[str, object],
) -> None:
    token = jwt.encode(token_claims, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated):
        await authenticate(header(token))


async def test_only_hs256_is_accepted_with_the_secret() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS512")
    with pytest.raises(Unauthenticated, match="'HS512' is not accepted"):
        await authenticate(header(token))
    unsigned = jwt.encode(claims(), "", algorithm="none")
    with pytest.raises(Unauthenticated, match="'none' is not accepted"):
        await authenticate(header(unsigned))


@pytest.mark.parametrize(
    ("scope", "granted"),
    [
        ("checkout/admin checkout/orders", {"admin", "orders"}),
        ("admin other/admin", set()),  # a bare "admin", or another resource server's
        ("", set()),
    ],
)
def test_a_scope_prefix_counts_only_the_scopes_named_with_it(scope: str, granted: set[str]) -> None:
    principal = principal_of({"sub": "c", "scope": scope}, scope_prefix="checkout/")
    assert principal.scopes == frozenset(granted)


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


def test_the_development_secret_is_off_once_a_jwks_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_JWT_SECRET", raising=False)
    settings = GatewaySettings(
        gateway_jwks_url=JWKS_URL,
        gateway_jwt_issuer="https://idp.example",
        gateway_jwt_audience="x",
    )
    assert not settings.uses_shared_secret
    authenticator = authenticator_for(settings)
    assert authenticator.algorithms == frozenset({"RS256", "ES256"})
    both = settings.model_copy(update={"gateway_jwt_secret": SECRET})
    assert authenticator_for(both).algorithms == frozenset({"HS256", "RS256", "ES256"})


def test_a_jwks_needs_an_issuer_and_an_audience() -> None:
    with pytest.raises(ValidationError, match="GATEWAY_JWT_ISSUER and GATEWAY_JWT_AUDIENCE"):
        GatewaySettings(gateway_jwks_url=JWKS_URL, gateway_jwt_issuer="https://idp.example")


@pytest.mark.parametrize(
    "variables",
    [
        {"GATEWAY_JWKS_URL": JWKS_URL, "GATEWAY_JWT_ISSUER": "i", "GATEWAY_JWT_AUDIENCE": "a"},
        {"GATEWAY_JWT_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:jwt"},
    ],
)
def test_production_takes_a_jwks_or_a_secret_from_secrets_manager(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6379/0")
    monkeypatch.delenv("GATEWAY_JWT_SECRET", raising=False)
    monkeypatch.setenv("APP_ENV", "production")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    algorithms = authenticator_for(settings).algorithms
    assert algorithms == ({"RS256", "ES256"} if "GATEWAY_JWKS_URL" in variables else {"HS256"})
