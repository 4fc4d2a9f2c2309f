"""The gateway's Authenticator for its settings: which key sources are on, and their limits.

HS256 is on when the gateway has a secret of its own (GATEWAY_JWT_SECRET set, or
GATEWAY_JWT_SECRET_ARN read from Secrets Manager and re-read every SECRETS_TTL_SECONDS), or,
on a developer machine with no JWKS configured, the development secret. RS256/ES256 are on
when GATEWAY_JWKS_URL is set. Production refuses to start with neither (GatewaySettings).
"""

from __future__ import annotations

import jwt

from gateway.auth import (
    Authenticator,
    Jwks,
    KeySource,
    KeysUnavailable,
    SecretReader,
    SharedSecret,
    TokenRules,
)
from gateway.settings import GatewaySettings
from marketplace_platform.secrets import SecretSource, SecretUnavailable, secret_source


def authenticator_for(settings: GatewaySettings) -> Authenticator:
    """The Authenticator these settings describe."""
    sources: list[KeySource] = []
    if settings.uses_shared_secret:
        secret = secret_source(
            settings.gateway_jwt_secret,
            settings.gateway_jwt_secret_arn,
            ttl_seconds=settings.secrets_ttl_seconds,
        )
        rules = TokenRules(max_lifetime_seconds=settings.gateway_jwt_max_lifetime_seconds)
        sources.append(SharedSecret(_readable(secret), rules))
    if settings.gateway_jwks_url:
        client = jwt.PyJWKClient(
            settings.gateway_jwks_url,
            lifespan=settings.gateway_jwks_cache_seconds,
            timeout=settings.gateway_jwks_timeout_seconds,
            cooldown_duration=settings.gateway_jwks_refresh_cooldown_seconds,
        )
        rules = TokenRules(
            max_lifetime_seconds=settings.gateway_jwt_max_lifetime_seconds,
            issuer=settings.gateway_jwt_issuer,
            audience=settings.gateway_jwt_audience,
            scope_prefix=settings.gateway_jwt_scope_prefix,
        )
        sources.append(Jwks(client, rules))
    return Authenticator(sources)


def _readable(secret: SecretSource) -> SecretReader:
    async def read() -> str:
        try:
            return await secret.aget()
        except SecretUnavailable as error:
            raise KeysUnavailable("the token secret cannot be read") from error

    return read
