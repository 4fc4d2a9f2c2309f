"""The HTTP adapter of the payment provider port (the PSP simulator, or a Stripe-like PSP).

Every mutating call carries an Idempotency-Key derived from the operation (from the order, for
its one authorization, capture and void). How an answer is read:

- 2xx: Approved. A replay (`Idempotent-Replayed: true`: the key's first answer, as it was then)
  carries the intent as it is now, read again, since it may have moved since (captured or
  voided, perhaps from another Region); Unknown if it cannot be read.
- 400, 402, 404: Declined: the PSP considered the request and refused it (card declined, amount
  or state refused, no such intent). A 400 `idempotency_error` (the key used first with other
  parameters, e.g. an order authorized in another Region before its cart was repriced) is
  Declined too, as `idempotency_key_reused`: the PSP will never apply this request.
- 408, 409, 425, 429: TryAgain: the PSP did not apply this request and asks for it again (409 is
  Stripe's `idempotency_key_in_use`: another request under the key is in flight; 429 is a rate
  limit, with the Retry-After it gives). Never a decline.
- Other 4xx (401, 403, ...): PspUnavailable: nothing was applied, and no retry helps until an
  operator fixes it; never a decline either.
- 5xx, timeout, dropped connection: Unknown: the PSP may or may not have applied it; never
  guessed, resolved by asking the PSP.

A circuit breaker answers at once while the PSP keeps failing, instead of piling up calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from marketplace_platform.metrics import PSP_BREAKER_OPEN, PSP_CALLS
from marketplace_platform.secrets import SecretSource, SecretUnavailable
from marketplace_platform.telemetry import trace_http_client
from services.payment.service_layer.ports import (
    Approved,
    Declined,
    Intent,
    PspOutcome,
    PspUnavailable,
    TryAgain,
    Unknown,
)

log = logging.getLogger(__name__)


# Statuses that mean "not applied by this request; send it again" (never a decline).
TRY_AGAIN_STATUSES = frozenset({408, 409, 425, 429})
# Statuses that mean the PSP considered the request and refused it.
REFUSAL_STATUSES = frozenset({400, 402, 404})
# The decline code of a request whose key the PSP holds for other parameters.
KEY_REUSED = "idempotency_key_reused"


class CircuitBreaker:
    """Open after consecutive failures; after a pause let one trial call through."""

    def __init__(self, *, failures_to_open: int = 5, open_seconds: float = 5.0) -> None:
        self.failures_to_open = failures_to_open
        self.open_seconds = open_seconds
        self._failures = 0
        self._opened_at: float | None = None

    def allow(self) -> bool:
        """Whether a call may go to the PSP now."""
        if self._opened_at is None:
            return True
        if time.monotonic() - self._opened_at >= self.open_seconds:
            self._opened_at = time.monotonic()  # half-open: this caller is the trial
            return True
        return False

    def record(self, *, healthy: bool) -> None:
        """Count an outcome: a healthy answer closes the breaker, failures open it."""
        if healthy:
            self._failures, self._opened_at = 0, None
            PSP_BREAKER_OPEN.set(0)
            return
        self._failures += 1
        if self._failures >= self.failures_to_open and self._opened_at is None:
            log.warning("PSP circuit opened after %d consecutive failures", self._failures)
            self._opened_at = time.monotonic()
            PSP_BREAKER_OPEN.set(1)


class ApiKey(httpx.Auth):
    """`Authorization: Bearer <API key>` with the key as it is now: read per request from its
    source (a Secrets Manager secret is re-read once its TTL has passed), so a rotated key is
    in use without a restart. A key that cannot be read sends nothing: PspUnavailable."""

    def __init__(self, key: SecretSource) -> None:
        self.key = key

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        try:
            key = await self.key.aget()
        except SecretUnavailable as error:
            raise PspUnavailable(f"the PSP API key cannot be read: {error}") from error
        if key:
            request.headers["Authorization"] = f"Bearer {key}"
        yield request


class HttpPsp:
    """A Stripe-like PSP over HTTP/JSON: the PaymentProvider of the service."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        breaker: CircuitBreaker,
        api_key: SecretSource | None = None,
    ) -> None:
        auth = ApiKey(api_key) if api_key is not None else None
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, auth=auth)
        trace_http_client(self._http)  # a client span per PSP call, traceparent sent
        self._breaker = breaker

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def create_intent(
        self,
        *,
        amount: int,
        currency: str,
        payment_method: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> PspOutcome:
        """Authorize: a payment intent with manual capture."""
        body = {
            "amount": amount,
            "currency": currency,
            "payment_method": payment_method,
            "capture_method": "manual",
            "metadata": metadata,
        }
        return await self._post("/v1/payment_intents", body, idempotency_key)

    async def capture(self, intent_id: str, *, amount: int, idempotency_key: str) -> PspOutcome:
        """Capture up to the authorized amount."""
        body = {"amount_to_capture": amount}
        return await self._post(f"/v1/payment_intents/{intent_id}/capture", body, idempotency_key)

    async def cancel(self, intent_id: str, *, idempotency_key: str) -> PspOutcome:
        """Void an uncaptured authorization."""
        return await self._post(f"/v1/payment_intents/{intent_id}/cancel", {}, idempotency_key)

    async def refund(self, intent_id: str, *, amount: int, idempotency_key: str) -> PspOutcome:
        """Refund part or all of what was captured."""
        body = {"payment_intent": intent_id, "amount": amount}
        return await self._post("/v1/refunds", body, idempotency_key)

    async def retrieve(self, intent_id: str) -> Intent | None:
        """The intent as the PSP has it now (None if it does not exist)."""
        response = await self._get(f"/v1/payment_intents/{intent_id}")
        return None if response.status_code == 404 else _intent(response.json())

    async def find(self, **metadata: str) -> list[Intent]:
        """Intents whose metadata has these values (e.g. order_id=...), oldest first."""
        params = {f"metadata[{k}]": v for k, v in metadata.items()}
        return [
            _intent(item)
            for item in (await self._get("/v1/payment_intents", params)).json()["data"]
        ]

    async def every_intent(self) -> AsyncIterator[Intent]:
        """All intents, page by page."""
        params: dict[str, str] = {"limit": "100"}
        while True:
            page = (await self._get("/v1/payment_intents", params)).json()
            for item in page["data"]:
                yield _intent(item)
            if not page["has_more"] or not page["data"]:
                return
            params["starting_after"] = page["data"][-1]["id"]

    async def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        if not self._breaker.allow():
            raise PspUnavailable("the PSP is failing; try again shortly")
        try:
            response = await self._http.get(path, params=params)
        except httpx.HTTPError as error:
            self._breaker.record(healthy=False)
            raise PspUnavailable(f"PSP read failed: {error!r}") from error
        healthy = response.status_code < 500 and response.status_code != 429
        self._breaker.record(healthy=healthy)
        if response.status_code >= 400 and response.status_code != 404:
            raise PspUnavailable(f"PSP read answered {response.status_code}")
        return response

    async def _post(self, path: str, body: dict[str, Any], idempotency_key: str) -> PspOutcome:
        """A write to the PSP, counted by outcome (checkout_psp_calls_total)."""
        if not self._breaker.allow():
            PSP_CALLS.labels("breaker_open").inc()
            raise PspUnavailable("the PSP is failing; try again shortly")
        outcome = await self._post_once(path, body, idempotency_key)
        PSP_CALLS.labels(type(outcome).__name__.lower()).inc()
        return outcome

    async def _post_once(self, path: str, body: dict[str, Any], idempotency_key: str) -> PspOutcome:
        try:
            response = await self._http.post(
                path, json=body, headers={"Idempotency-Key": idempotency_key}
            )
        except httpx.HTTPError as error:
            self._breaker.record(healthy=False)
            log.warning("PSP %s: no answer (%r); outcome unknown", path, error)
            return Unknown(repr(error))
        status = response.status_code
        if status >= 500:
            self._breaker.record(healthy=False)
            return Unknown(f"PSP answered {status}")
        # A rate limit is the PSP saying it is overloaded: it counts towards opening the breaker.
        self._breaker.record(healthy=status != 429)
        payload = _json(response)
        problem = payload.get("error") or {}
        if status in TRY_AGAIN_STATUSES:
            log.info("PSP %s answered %s (%s): not applied, trying again", path, status, problem)
            return TryAgain(
                f"PSP answered {status} {problem.get('code') or ''}".strip(),
                after_seconds=_retry_after(response),
            )
        if status < 300:
            intent = _intent(payload) if payload.get("object") == "payment_intent" else None
            if intent is not None and response.headers.get("idempotent-replayed") == "true":
                try:
                    intent = await self.retrieve(intent.id) or intent
                except PspUnavailable as error:
                    return Unknown(f"replayed {path}; the intent now: {error}")
            return Approved(intent=intent, reference=str(payload["id"]))
        if problem.get("type") == "idempotency_error":
            log.error(
                "PSP idempotency key %s was first used with other parameters", idempotency_key
            )
            return Declined(code=KEY_REUSED)
        if status not in REFUSAL_STATUSES:
            log.error("PSP %s answered %s (%s): not applied, not a refusal", path, status, problem)
            raise PspUnavailable(f"the PSP answered {status}; nothing was applied")
        code = problem.get("decline_code") or problem.get("code") or problem.get("type", "refused")
        intent_id = (problem.get("payment_intent") or {}).get("id")
        return Declined(code=str(code), intent_id=intent_id)


def _json(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of an answer ({} when it has none, e.g. a proxy's HTML page)."""
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the Retry-After header asks us to wait (seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _intent(data: dict[str, Any]) -> Intent:
    capture_before = data.get("capture_before")
    error = data.get("last_payment_error") or {}
    return Intent(
        id=data["id"],
        status=data["status"],
        amount=int(data["amount"]),
        currency=str(data["currency"]).upper(),
        amount_capturable=int(data.get("amount_capturable", 0)),
        amount_received=int(data.get("amount_received", 0)),
        amount_refunded=int(data.get("amount_refunded", 0)),
        metadata=dict(data.get("metadata") or {}),
        capture_before=datetime.fromtimestamp(capture_before, UTC) if capture_before else None,
        created=datetime.fromtimestamp(data["created"], UTC) if data.get("created") else None,
        decline_code=error.get("decline_code") or error.get("code"),
    )
