"""The PSP's refusals, each carrying its HTTP status and Stripe-like error body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PspError(Exception):
    """A refusal: `{"error": {"type", "code", "message", ...}}` with an HTTP status."""

    status = 400
    error_type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        payment_intent: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.payment_intent = payment_intent

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.param is not None:
            error["param"] = self.param
        if self.payment_intent is not None:
            error["payment_intent"] = dict(self.payment_intent)
        return {"error": error}


class InvalidRequest(PspError):
    """Bad parameters, or an operation the intent's state or amounts do not allow."""


class ResourceMissing(PspError):
    """No such object."""

    status = 404

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, code="resource_missing", param=param)


class CardDeclined(PspError):
    """The card was declined (by the issuer, or by the fraud check); the intent exists."""

    status = 402
    error_type = "card_error"

    def __init__(self, message: str, *, decline_code: str, payment_intent: Mapping[str, Any]):
        super().__init__(message, code="card_declined", payment_intent=payment_intent)
        self.decline_code = decline_code

    def body(self) -> dict[str, Any]:
        """The JSON error body, with the decline code."""
        body = super().body()
        body["error"]["decline_code"] = self.decline_code
        return body


class IdempotencyMismatch(PspError):
    """An idempotency key reused with other parameters."""

    error_type = "idempotency_error"


class ApiError(PspError):
    """The PSP failed (here: an injected fault); nothing was applied."""

    status = 500
    error_type = "api_error"


class KeyInUse(PspError):
    """Another request with this Idempotency-Key is in flight (Stripe: 409, same type and code);
    nothing was applied by this one, and a retry once the other is done gets its answer."""

    status = 409
    error_type = "idempotency_error"

    def __init__(self) -> None:
        super().__init__(
            "There is currently another in-progress request using this Idempotency-Key; "
            "retry this request later.",
            code="idempotency_key_in_use",
        )


class RateLimited(PspError):
    """Too many requests (Stripe: 429 with code `rate_limit`); nothing was applied."""

    status = 429

    def __init__(self) -> None:
        super().__init__("Too many requests hit the API too quickly.", code="rate_limit")


class ServiceUnavailable(PspError):
    """The PSP is down (an injected outage); nothing was applied."""

    status = 503
    error_type = "api_error"

    def __init__(self) -> None:
        super().__init__("injected outage: the PSP is unavailable", code="service_unavailable")
