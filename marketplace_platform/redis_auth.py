"""Redis AUTH from a rotating secret (marketplace_platform.secrets), for the processes that
use Redis (cart, gateway): apart from secrets so that the others do not import redis-py."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from redis.credentials import CredentialProvider

from marketplace_platform.secrets import RotatingSecret


class RedisAuthToken(CredentialProvider):
    """Redis AUTH from a rotating secret: redis-py asks on every new connection, so
    connections opened after a rotation use the new token (open ones stay authenticated)."""

    def __init__(self, secret: RotatingSecret) -> None:
        self.secret = secret

    def get_credentials(self) -> tuple[str]:
        """The token as the password of the default user."""
        return (self.secret.get(),)

    async def get_credentials_async(self) -> tuple[str]:
        """The same, for the asyncio client."""
        return (await self.secret.aget(),)


def redis_credentials(secret_id: str | None, *, ttl_seconds: float) -> RedisAuthToken | None:
    """A credential provider when REDIS_AUTH_TOKEN_SECRET_ARN names the token's secret (a JSON
    object with a `token` field, as the templates store it), else None: the URL's own."""
    if not secret_id:
        return None
    return RedisAuthToken(RotatingSecret(secret_id, ttl_seconds=ttl_seconds, json_key="token"))


def url_without_auth(url: str) -> str:
    """`url` with no user or password: redis-py refuses a URL's password together with a
    credential provider, and the entry point still puts the token it was started with (the
    REDIS_AUTH_TOKEN variable) in REDIS_URL; with the secret ARN set, the provider's is used."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))
