"""Bearer tokens: JWTs whose `sub` is the customer and whose `scope` grants admin.

Two key sources, each with its own fixed algorithms, so a token cannot pick how it is checked
(`alg` confusion): the shared secret (development, or a secret from Secrets Manager) accepts
HS256 only; an identity provider's JWKS (Cognito in production) accepts RS256 and ES256 only,
each key with the algorithm of its own type. A token whose `alg` no configured source accepts
(`none`, HS256 when only the JWKS is configured, HS256 signed with the provider's public key)
is refused before any key is looked at. Every token must carry `sub`, `iat` and `exp`, and
`exp - iat` may not exceed the maximum lifetime: a leaked token is useful for a bounded time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

ALGORITHM = "HS256"  # the shared secret's one algorithm (development tokens)
JWKS_ALGORITHMS = ("RS256", "ES256")
ADMIN_SCOPE = "admin"
MAX_SUBJECT_LENGTH = 128  # the contracts' CustomerId limit


class Unauthenticated(Exception):
    """No usable token: missing, malformed, badly signed or expired (HTTP 401)."""


class Forbidden(Exception):
    """A valid token without the scope the route needs (HTTP 403)."""


class KeysUnavailable(Exception):
    """The identity provider's keys could not be fetched (HTTP 503): not the caller's fault."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the customer id (the token's subject) and the scopes it was granted."""

    customer_id: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        """Raise Forbidden unless the token carries `scope`."""
        if scope not in self.scopes:
            raise Forbidden(f"this route needs the '{scope}' scope")


@dataclass(frozen=True)
class TokenRules:
    """What every token must satisfy besides its signature. `issuer`/`audience`, when set,
    must equal the token's `iss`/`aud` (both required then)."""

    max_lifetime_seconds: float
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: float = 0.0
    # Scopes count only with this prefix, which is taken off: Cognito names a resource
    # server's custom scopes "<identifier>/admin". "": every scope as it is.
    scope_prefix: str = ""


SecretReader = Callable[[], Awaitable[str]]


class KeySource(Protocol):
    """Where the verification key of a token comes from, the algorithms it allows and the
    rules its tokens must satisfy."""

    algorithms: tuple[str, ...]
    rules: TokenRules

    async def key_for(self, token: str) -> Any:
        """The key that checks `token`'s signature (Unauthenticated if there is none)."""
        ...


class SharedSecret:
    """HS256 with a shared secret, read per token (a rotated secret is used at once)."""

    algorithms: tuple[str, ...] = (ALGORITHM,)

    def __init__(self, secret: SecretReader, rules: TokenRules) -> None:
        self._secret = secret
        self.rules = rules

    async def key_for(self, token: str) -> Any:
        return await self._secret()


class Jwks:
    """RS256/ES256 keys from an identity provider's JWKS URL (a PyJWKClient: the key set is
    cached, re-fetched when it expires or a token names an unknown `kid`). Fetching blocks, so
    it runs in a thread; a fetch that fails or times out is KeysUnavailable."""

    algorithms: tuple[str, ...] = JWKS_ALGORITHMS

    def __init__(self, client: jwt.PyJWKClient, rules: TokenRules) -> None:
        self.client = client
        self.rules = rules

    async def key_for(self, token: str) -> Any:
        return await asyncio.to_thread(self._key_for, token)

    def _key_for(self, token: str) -> jwt.PyJWK:
        try:
            key = self.client.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as error:
            raise KeysUnavailable("the identity provider's keys cannot be fetched") from error
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as error:
            raise Unauthenticated(f"the token's key is not known: {error}") from error
        if key.algorithm_name not in self.algorithms:
            raise Unauthenticated(
                f"the key for this token is not an {'/'.join(self.algorithms)} key"
            )
        return key


class Authenticator:
    """Checks `Authorization: Bearer <JWT>` against the key source of the token's algorithm."""

    def __init__(self, sources: list[KeySource]) -> None:
        if not sources:
            raise ValueError("at least one key source is needed")
        self._by_algorithm: dict[str, KeySource] = {}
        for source in sources:
            for algorithm in source.algorithms:
                self._by_algorithm.setdefault(algorithm, source)

    @property
    def algorithms(self) -> frozenset[str]:
        """Every algorithm some configured source accepts."""
        return frozenset(self._by_algorithm)

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of the header, or Unauthenticated (KeysUnavailable: try later)."""
        token = bearer_token(authorization)
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(f"the token is not valid: {error}") from error
        source = self._by_algorithm.get(algorithm) if isinstance(algorithm, str) else None
        if source is None:
            accepted = ", ".join(sorted(self._by_algorithm))
            raise Unauthenticated(f"the token's alg {algorithm!r} is not accepted ({accepted})")
        key = await source.key_for(token)
        claims = verify(token, key, source.algorithms, source.rules)
        return principal_of(claims, scope_prefix=source.rules.scope_prefix)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or Unauthenticated."""
    if not authorization:
        raise Unauthenticated("an Authorization: Bearer token is required")
    kind, _, token = authorization.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def verify(token: str, key: Any, algorithms: tuple[str, ...], rules: TokenRules) -> dict[str, Any]:
    """The token's claims once its signature, times, issuer, audience and lifetime check."""
    required = ["sub", "exp", "iat"]
    required += ["iss"] if rules.issuer is not None else []
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            issuer=rules.issuer,
            leeway=rules.leeway_seconds,
            options={"require": required, "verify_aud": False},  # checked below
        )
    except jwt.ExpiredSignatureError as error:
        raise Unauthenticated("the token has expired") from error
    except jwt.ImmatureSignatureError as error:
        raise Unauthenticated("the token is not valid yet") from error
    except jwt.InvalidSignatureError as error:
        raise Unauthenticated("the token's signature does not verify") from error
    except jwt.InvalidIssuerError as error:
        raise Unauthenticated("the token is from another issuer") from error
    except jwt.InvalidTokenError as error:
        raise Unauthenticated(f"the token is not valid: {error}") from error
    if rules.audience is not None:
        check_audience(claims, rules.audience)
    lifetime = claims["exp"] - claims["iat"]
    if lifetime > rules.max_lifetime_seconds:
        limit = rules.max_lifetime_seconds
        raise Unauthenticated(f"the token lives {lifetime:g} s, more than the {limit:g} s allowed")
    return claims


def check_audience(claims: Mapping[str, Any], audience: str) -> None:
    """`aud` (a string or a list) must name `audience`. Cognito's access tokens carry no `aud`:
    theirs is `client_id` (with `token_use: access`), checked the same way, as AWS documents."""
    if "aud" in claims:
        named = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    elif claims.get("token_use") == "access" and "client_id" in claims:
        named = [claims["client_id"]]
    else:
        raise Unauthenticated("the token names no audience (aud)")
    if audience not in named:
        raise Unauthenticated("the token is for another audience")


def principal_of(claims: Mapping[str, Any], *, scope_prefix: str = "") -> Principal:
    """The principal named by verified claims: `sub` and the space-separated `scope`, of which
    only those named with `scope_prefix` count (without it), when there is one: a bare "admin"
    from another resource server grants nothing."""
    subject = claims["sub"]
    if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT_LENGTH:
        raise Unauthenticated(f"the token's sub must be 1..{MAX_SUBJECT_LENGTH} characters")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise Unauthenticated("the token's scope must be a space-separated string")
    scopes = scope.split()
    if scope_prefix:
        scopes = [
            name.removeprefix(scope_prefix) for name in scopes if name.startswith(scope_prefix)
        ]
    return Principal(customer_id=subject, scopes=frozenset(scopes))


def issue_token(
    *,
    secret: str,
    subject: str,
    scopes: tuple[str, ...] = (),
    ttl_seconds: float = 3600.0,
    now: float | None = None,
) -> str:
    """A signed token for `subject`, as an identity provider would issue it (dev and tests)."""
    issued = int(time.time() if now is None else now)
    claims = {"sub": subject, "scope": " ".join(scopes), "iat": issued}
    claims["exp"] = issued + int(ttl_seconds)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
