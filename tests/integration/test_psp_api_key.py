"""The PSP API key as the PSP receives it: an HTTP server of the test's records each request's
Authorization header. From Secrets Manager (moto in server mode) the key is the secret's current
version, and a rotation is what the next request carries once the TTL has passed, with the
same client (no restart); a key that cannot be read sends nothing; no key, no header."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from marketplace_platform.secrets import FixedSecret, RotatingSecret
from services.payment.adapters.psp import CircuitBreaker, HttpPsp
from services.payment.service_layer.ports import PspUnavailable
from tests.support.clock import ManualClock

TTL = 60.0


class RecordingPsp:
    """Answers 404 to every read and remembers the Authorization header of each request."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        recorded = self.authorizations

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorded.append(self.headers.get("Authorization"))
                body = b'{"error": {"type": "invalid_request_error", "code": "resource_missing"}}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def psp_server() -> Iterator[RecordingPsp]:
    psp = RecordingPsp()
    thread = threading.Thread(target=psp.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield psp
    finally:
        psp.server.shutdown()
        psp.server.server_close()
        thread.join(timeout=5)


def client(url: str, api_key: Any) -> HttpPsp:
    breaker = CircuitBreaker(failures_to_open=5, open_seconds=5)
    return HttpPsp(url, timeout=2.0, breaker=breaker, api_key=api_key)


async def test_a_rotated_key_is_sent_once_the_ttl_has_passed(
    psp_server: RecordingPsp, secrets_client: Any
) -> None:
    arn = secrets_client.create_secret(Name=f"psp/{uuid.uuid4().hex}", SecretString="sk_v1")["ARN"]
    clock = ManualClock(1000.0)
    key = RotatingSecret(arn, ttl_seconds=TTL, client=secrets_client, clock=clock)
    psp = client(psp_server.url, key)
    try:
        assert await psp.retrieve("pi_missing") is None
        secrets_client.put_secret_value(SecretId=arn, SecretString="sk_v2")
        assert await psp.retrieve("pi_missing") is None  # within the TTL: still v1
        clock.now += TTL
        assert await psp.retrieve("pi_missing") is None
    finally:
        await psp.close()
    assert psp_server.authorizations == ["Bearer sk_v1", "Bearer sk_v1", "Bearer sk_v2"]


async def test_a_key_that_cannot_be_read_sends_nothing(
    psp_server: RecordingPsp, secrets_client: Any
) -> None:
    key = RotatingSecret("psp/does-not-exist", ttl_seconds=TTL, client=secrets_client)
    psp = client(psp_server.url, key)
    try:
        with pytest.raises(PspUnavailable, match="API key"):
            await psp.retrieve("pi_missing")
    finally:
        await psp.close()
    assert psp_server.authorizations == []


async def test_a_plain_key_is_sent_and_no_key_sends_no_header(psp_server: RecordingPsp) -> None:
    for api_key in (FixedSecret("sk_local"), FixedSecret(""), None):
        psp = client(psp_server.url, api_key)
        try:
            await psp.retrieve("pi_missing")
        finally:
            await psp.close()
    assert psp_server.authorizations == ["Bearer sk_local", None, None]
