"""The gateway verifying an identity provider's tokens: a real JWKS server on a free port serves
RSA and EC P-256 keys generated here; the gateway (uvicorn, real Redis, a real inventory
service behind it) accepts RS256 and ES256 tokens from them and refuses, with 401 problem
details, every token it must not trust: another audience or issuer, expired, not valid yet,
living too long, HS256 signed with the provider's public key, `alg: none`, a `kid` the
provider does not publish even after a refresh, and a development-secret token while only the
JWKS is configured. A JWKS that cannot be reached is 503, not 401 or 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth import ADMIN_SCOPE, issue_token
from gateway.settings import DEV_JWT_SECRET, GatewaySettings
from local_supervisor.embedded import free_port
from marketplace_platform.grpc_server import RunningServer
from tests.integration.test_gateway import (
    Gateway,
    assert_problem,
    fresh_sku,
    gateway_settings,
    running_gateway,
)

ISSUER = "https://idp.test/pool-1"
AUDIENCE = "checkout-api"
MAX_LIFETIME = 3600


@dataclass
class SigningKey:
    """A private key of the provider's, and the `kid` and `alg` it signs with."""

    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        kind = RSAAlgorithm if self.alg == "RS256" else ECAlgorithm
        document: dict[str, Any] = kind.to_jwk(self.private.public_key(), as_dict=True)
        return document | {"kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid})


def rsa_key() -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(f"rsa-{uuid.uuid4().hex[:8]}", "RS256", private)


def ec_key() -> SigningKey:
    return SigningKey(
        f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1())
    )


@dataclass
class JwksServer:
    """An HTTP server publishing `keys` at /jwks.json, counting the fetches."""

    keys: list[SigningKey]
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def document(self) -> bytes:
        with self.lock:
            self.fetches += 1
            return json.dumps({"keys": [key.public_jwk() for key in self.keys]}).encode()


@pytest.fixture(scope="module")
def provider_keys() -> tuple[SigningKey, SigningKey]:
    return rsa_key(), ec_key()


@pytest.fixture(scope="module")
def jwks(provider_keys: tuple[SigningKey, SigningKey]) -> Iterator[JwksServer]:
    published = JwksServer(keys=list(provider_keys))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/jwks.json":
                self.send_error(404)
                return
            body = published.document()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    published.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield published
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def jwks_settings(jwks_url: str, inventory_port: int, redis_url: str) -> GatewaySettings:
    """Only the JWKS: no secret of the gateway's own, so the development secret is off."""
    return gateway_settings(
        inventory_port,
        redis_url,
        gateway_jwt_secret=DEV_JWT_SECRET,
        gateway_jwks_url=jwks_url,
        gateway_jwt_issuer=ISSUER,
        gateway_jwt_audience=AUDIENCE,
        gateway_jwt_max_lifetime_seconds=MAX_LIFETIME,
        gateway_jwks_refresh_cooldown_seconds=0,  # an unknown kid refreshes at once
    )


@pytest.fixture(scope="module")
async def gateway(
    jwks: JwksServer, inventory_server: RunningServer, redis_server_url: str
) -> AsyncIterator[Gateway]:
    settings = jwks_settings(jwks.url, inventory_server.port, redis_server_url)
    assert not settings.uses_shared_secret
    async with running_gateway(settings) as gw:
        yield gw


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


def claims(**extra: Any) -> dict[str, Any]:
    """A token's claims as the provider issues them, `extra` on top (None removes a claim)."""
    now = int(time.time())
    values = {
        "sub": f"c-{uuid.uuid4().hex[:10]}",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "scope": ADMIN_SCOPE,
        **extra,
    }
    return {name: value for name, value in values.items() if value is not None}


def hs256_by_hand(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    """HS256 over `secret` without PyJWT, which refuses a PEM as an HMAC key: the forgery an
    attacker who knows the provider's public key would try."""

    def part(document: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=")

    signing_input = part({"alg": "HS256", "typ": "JWT", "kid": kid}) + b"." + part(payload)
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


async def stock_of_unknown_sku(http: httpx.AsyncClient, token: str) -> httpx.Response:
    """An admin call that, once authorized, reaches inventory and comes back 404."""
    headers = {"Authorization": f"Bearer {token}"}
    return await http.get(f"/v1/admin/inventory/{fresh_sku()}", headers=headers)


@pytest.mark.parametrize("which", [0, 1], ids=["RS256", "ES256"])
async def test_the_providers_tokens_are_authorized(
    http: httpx.AsyncClient, provider_keys: tuple[SigningKey, SigningKey], which: int
) -> None:
    response = await stock_of_unknown_sku(http, provider_keys[which].sign(claims()))
    body = assert_problem(response, 404)  # past auth and the throttle, answered by inventory
    assert body["type"] == "/problems/not-found"


@pytest.mark.parametrize(
    "audience_claims",
    [
        {"aud": ["another-api", AUDIENCE]},
        {"aud": None, "token_use": "access", "client_id": AUDIENCE},  # Cognito's access tokens
    ],
    ids=["aud-list", "cognito-access-token"],
)
async def test_the_audience_may_be_one_of_several_or_cognitos_client_id(
    http: httpx.AsyncClient,
    provider_keys: tuple[SigningKey, SigningKey],
    audience_claims: dict[str, Any],
) -> None:
    token = provider_keys[0].sign(claims(**audience_claims))
    assert_problem(await stock_of_unknown_sku(http, token), 404)


async def test_the_scope_still_decides_admin_routes(
    http: httpx.AsyncClient, provider_keys: tuple[SigningKey, SigningKey]
) -> None:
    response = await stock_of_unknown_sku(http, provider_keys[0].sign(claims(scope="orders")))
    assert_problem(response, 403)


async def test_with_a_scope_prefix_a_cognito_resource_servers_admin_scope_opens_admin_routes(
    jwks: JwksServer,
    inventory_server: RunningServer,
    redis_server_url: str,
    provider_keys: tuple[SigningKey, SigningKey],
) -> None:
    settings = jwks_settings(jwks.url, inventory_server.port, redis_server_url)
    settings = settings.model_copy(update={"gateway_jwt_scope_prefix": "checkout/"})
    cognito_admin = claims(aud=None, token_use="access", client_id=AUDIENCE,
                           scope=f"checkout/{ADMIN_SCOPE}")  # fmt: skip
    async with running_gateway(settings) as gw, gw.client() as http:
        assert_problem(await stock_of_unknown_sku(http, provider_keys[0].sign(cognito_admin)), 404)
        bare = provider_keys[0].sign(claims(scope=ADMIN_SCOPE))  # not the resource server's
        assert_problem(await stock_of_unknown_sku(http, bare), 403)


def _forged(keys: tuple[SigningKey, SigningKey], case: str) -> str:
    rsa_signer, ec_signer = keys
    now = int(time.time())
    if case == "another-audience":
        return rsa_signer.sign(claims(aud="some-other-api"))
    if case == "no-audience":
        return ec_signer.sign(claims(aud=None))
    if case == "another-audience-in-a-list":
        return ec_signer.sign(claims(aud=["some-other-api", "and-another"]))
    if case == "cognito-access-token-of-another-client":
        return rsa_signer.sign(claims(aud=None, token_use="access", client_id="another-client"))
    if case == "client-id-without-token-use-access":
        return rsa_signer.sign(claims(aud=None, client_id=AUDIENCE))
    if case == "wrong-issuer":
        return rsa_signer.sign(claims(iss="https://evil.test/pool-1"))
    if case == "expired":
        return ec_signer.sign(claims(iat=now - 600, exp=now - 60))
    if case == "not-valid-yet":
        return rsa_signer.sign(claims(nbf=now + 120))
    if case == "lifetime-over-maximum":
        return ec_signer.sign(claims(exp=now + MAX_LIFETIME + 1))
    if case == "hs256-with-the-public-key":
        return hs256_by_hand(claims(), rsa_signer.public_pem(), rsa_signer.kid)
    if case == "hs256-with-the-public-jwk":
        jwk_text = json.dumps(rsa_signer.public_jwk()).encode()
        return hs256_by_hand(claims(), jwk_text, rsa_signer.kid)
    if case == "alg-none":
        return jwt.encode(claims(), "", algorithm="none", headers={"kid": rsa_signer.kid})
    if case == "rs256-key-claiming-es256":
        token = rsa_signer.sign(claims())
        header, rest = token.split(".", 1)
        fake = {"alg": "ES256", "typ": "JWT", "kid": rsa_signer.kid}
        forged = base64.urlsafe_b64encode(json.dumps(fake).encode()).rstrip(b"=").decode()
        assert header != forged
        return f"{forged}.{rest}"
    if case == "development-secret":
        return issue_token(secret=DEV_JWT_SECRET, subject="c-dev", scopes=(ADMIN_SCOPE,))
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("another-audience", "another audience"),
        ("no-audience", "names no audience"),
        ("another-audience-in-a-list", "another audience"),
        ("cognito-access-token-of-another-client", "another audience"),
        ("client-id-without-token-use-access", "names no audience"),
        ("wrong-issuer", "another issuer"),
        ("expired", "expired"),
        ("not-valid-yet", "not valid yet"),
        ("lifetime-over-maximum", "3601 s, more than the 3600 s"),
        ("hs256-with-the-public-key", "alg 'HS256' is not accepted"),
        ("hs256-with-the-public-jwk", "alg 'HS256' is not accepted"),
        ("alg-none", "alg 'none' is not accepted"),
        ("rs256-key-claiming-es256", "does not match the key's algorithm"),
        ("development-secret", "alg 'HS256' is not accepted"),
    ],
)
async def test_tokens_it_must_not_trust_are_401(
    http: httpx.AsyncClient, provider_keys: tuple[SigningKey, SigningKey], case: str, why: str
) -> None:
    response = await stock_of_unknown_sku(http, _forged(provider_keys, case))
    assert why in assert_problem(response, 401)["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


async def test_with_a_secret_too_hs256_is_checked_with_that_secret_only(
    jwks: JwksServer,
    inventory_server: RunningServer,
    redis_server_url: str,
    provider_keys: tuple[SigningKey, SigningKey],
) -> None:
    own_secret = "the-gateways-own-secret-0123456789abcdef"
    settings = jwks_settings(jwks.url, inventory_server.port, redis_server_url)
    settings = settings.model_copy(update={"gateway_jwt_secret": own_secret})
    forged = _forged(provider_keys, "hs256-with-the-public-key")
    own = issue_token(secret=own_secret, subject="c-own", scopes=(ADMIN_SCOPE,))
    async with running_gateway(settings) as gw, gw.client() as http:
        refused = await stock_of_unknown_sku(http, forged)
        assert "signature does not verify" in assert_problem(refused, 401)["detail"]
        assert_problem(await stock_of_unknown_sku(http, own), 404)
        signed = provider_keys[1].sign(claims())
        assert_problem(await stock_of_unknown_sku(http, signed), 404)


async def test_an_unknown_kid_is_401_after_one_refresh(
    http: httpx.AsyncClient, jwks: JwksServer
) -> None:
    stranger = rsa_key()  # never published
    before = jwks.fetches
    response = await stock_of_unknown_sku(http, stranger.sign(claims()))
    body = assert_problem(response, 401)
    assert "key" in body["detail"]
    assert jwks.fetches == before + 1  # the set was fetched again before refusing


async def test_a_key_the_provider_rotates_in_is_found_by_the_refresh(
    http: httpx.AsyncClient, jwks: JwksServer
) -> None:
    rotated_in = ec_key()
    with jwks.lock:
        jwks.keys.append(rotated_in)
    try:
        response = await stock_of_unknown_sku(http, rotated_in.sign(claims()))
        assert_problem(response, 404)
    finally:
        with jwks.lock:
            jwks.keys.remove(rotated_in)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections (the kernel's backlog) and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.parametrize("how", ["refused", "silent"])
async def test_an_unreachable_jwks_is_503_not_401(
    inventory_server: RunningServer,
    redis_server_url: str,
    provider_keys: tuple[SigningKey, SigningKey],
    silent_port: int,
    how: str,
) -> None:
    port = free_port() if how == "refused" else silent_port
    settings = jwks_settings(
        f"http://127.0.0.1:{port}/jwks.json", inventory_server.port, redis_server_url
    )
    settings = settings.model_copy(update={"gateway_jwks_timeout_seconds": 0.3})
    async with running_gateway(settings) as gw, gw.client() as http:
        started = time.monotonic()
        response = await stock_of_unknown_sku(http, provider_keys[0].sign(claims()))
        elapsed = time.monotonic() - started
    body = assert_problem(response, 503)
    assert response.headers["retry-after"]
    assert "identity provider" in body["detail"]
    assert elapsed < 2.0  # the fetch's timeout, not the request budget, ended it
