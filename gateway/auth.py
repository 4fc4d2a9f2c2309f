"""Bearer tokens: HS256 JWTs whose `sub` is the customer and whose `scope` grants admin."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ADMIN_SCOPE = "admin"
MAX_SUBJECT_LENGTH = 128  # the contracts' CustomerId limit


class Unauthenticated(Exception):
    """No usable token: missing, malformed, badly signed or expired (HTTP 401)."""


class Forbidden(Exception):
    """A valid token without the scope the route needs (HTTP 403)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the customer id (the token's subject) and the scopes it was granted."""

    customer_id: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        """Raise Forbidden unless the token carries `scope`."""
        if scope not in self.scopes:
            raise Forbidden(f"this route needs the '{scope}' scope")


def authenticate(authorization: str | None, *, secret: str, leeway: float = 0.0) -> Principal:
    """The principal of an `Authorization: Bearer <JWT>` header, or Unauthenticated."""
    if not authorization:
        raise Unauthenticated("an Authorization: Bearer token is required")
    kind, _, token = authorization.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    try:
        claims = jwt.decode(
            token.strip(),
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp"]},
            leeway=leeway,
        )
    except jwt.ExpiredSignatureError as error:
        raise Unauthenticated("the token has expired") from error
    except jwt.InvalidSignatureError as error:
        raise Unauthenticated("the token's signature does not verify") from error
    except jwt.InvalidTokenError as error:
        raise Unauthenticated(f"the token is not valid: {error}") from error
    subject = claims["sub"]
    if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT_LENGTH:
        raise Unauthenticated(f"the token's sub must be 1..{MAX_SUBJECT_LENGTH} characters")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise Unauthenticated("the token's scope must be a space-separated string")
    return Principal(customer_id=subject, scopes=frozenset(scope.split()))


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
