"""Fault injection: what can go wrong on a POST, and the dice that decide it per request.

What each fault does to a POST under /v1 (GETs and /admin are never faulted):

- `latency_ms`: the request waits this long before it is handled; applied as usual.
- `error_rate`: 500 `api_error`; nothing applied.
- `hang_rate`, `hang_seconds`: no answer for `hang_seconds`, then 500 `api_error`; nothing
  applied.
- `ambiguous_rate`: applied (its answer stored under the key), then the connection is dropped
  without an answer.
- `response_delay_ms`: applied and stored, then the answer is held back this long. With a delay
  longer than the client's timeout this is "applied, then answered after the client gave up";
  a retry under the same key during the delay already gets the stored answer (a replay).
- `conflict_rate`: 409 `idempotency_error` with code `idempotency_key_in_use` (Stripe's answer
  to a request while another under its Idempotency-Key is in flight); nothing applied. That
  409 also comes without this fault, whenever two requests under one key overlap: the key is
  held from a request's arrival (before its latency) until its answer is stored. A request a
  fault refuses (error, hang, outage, ...) never holds its key: it never reached processing.
- `rate_limit_rate`: 429 `invalid_request_error` with code `rate_limit` (Stripe's), with
  `Retry-After: <retry_after_seconds>` (no header when 0); nothing applied.
- `rate_limit_seconds`: a burst: every POST answers that 429 for this many seconds after the
  faults are set, then the burst ends on its own.
- `outage_seconds`: every POST answers 503 `api_error` with code `service_unavailable` for this
  many seconds after the faults are set, then the outage ends on its own; nothing applied.
  With `outage_hang`, each POST is held until the outage ends, then answered 503.

A request suffers at most one refusal, in this order: outage, rate-limit burst or rate limit,
conflict, error, hang.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class FaultConfig(BaseModel):
    """The faults in force: a fixed latency, rates in [0, 1], and how long a hang lasts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_ms: int = Field(default=0, ge=0)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    hang_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    hang_seconds: float = Field(default=30.0, ge=0.0)
    ambiguous_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    response_delay_ms: int = Field(default=0, ge=0)
    conflict_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_limit_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_limit_seconds: float = Field(default=0.0, ge=0.0)
    retry_after_seconds: int = Field(default=1, ge=0)
    outage_seconds: float = Field(default=0.0, ge=0.0)
    outage_hang: bool = False


class Refusal(StrEnum):
    """A fault that answers without applying the operation."""

    ERROR = "error"
    HANG = "hang"
    CONFLICT = "conflict"
    RATE_LIMIT = "rate_limit"
    OUTAGE = "outage"


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    """What one request suffers: before handling, instead of it, or after it."""

    latency_seconds: float = 0.0
    refusal: Refusal | None = None
    hang_seconds: float = 0.0  # HANG: how long; OUTAGE with outage_hang: until the outage ends
    retry_after_seconds: int = 0  # RATE_LIMIT: the Retry-After header (0: none)
    ambiguous: bool = False  # applied, then the response is lost
    response_delay_seconds: float = 0.0

    def describe(self) -> str | None:
        """The injected faults as "latency+ambiguous", or None when there are none."""
        names = []
        if self.latency_seconds:
            names.append("latency")
        if self.refusal is not None:
            names.append(self.refusal.value)
        if self.ambiguous:
            names.append("ambiguous")
        if self.response_delay_seconds and self.refusal is None and not self.ambiguous:
            names.append("response_delay")
        return "+".join(names) or None


class FaultInjector:
    """Holds the fault configuration (replaceable at run time) and rolls the dice.

    Windows (`rate_limit_seconds`, `outage_seconds`) count from when their configuration was
    put in force, so they end on their own.
    """

    def __init__(
        self,
        config: FaultConfig,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rng = rng or random.Random()
        self._clock = clock
        self._config = config
        self._since = clock()

    @property
    def config(self) -> FaultConfig:
        """The configuration in force."""
        return self._config

    def replace(self, config: FaultConfig) -> None:
        """Put a new configuration in force for the requests that arrive from now on."""
        self._config, self._since = config, self._clock()

    def plan(self) -> FaultPlan:
        """Decide the faults of one request."""
        config = self._config
        refusal, hang_seconds = self._refusal(config)
        return FaultPlan(
            latency_seconds=config.latency_ms / 1000,
            refusal=refusal,
            hang_seconds=hang_seconds,
            retry_after_seconds=config.retry_after_seconds,
            ambiguous=refusal is None and self._happens(config.ambiguous_rate),
            response_delay_seconds=config.response_delay_ms / 1000,
        )

    def _refusal(self, config: FaultConfig) -> tuple[Refusal | None, float]:
        """The refusal this request gets, if any, and how long it hangs first."""
        elapsed = self._clock() - self._since
        if elapsed < config.outage_seconds:
            return Refusal.OUTAGE, config.outage_seconds - elapsed if config.outage_hang else 0.0
        if elapsed < config.rate_limit_seconds or self._happens(config.rate_limit_rate):
            return Refusal.RATE_LIMIT, 0.0
        if self._happens(config.conflict_rate):
            return Refusal.CONFLICT, 0.0
        if self._happens(config.error_rate):
            return Refusal.ERROR, 0.0
        if self._happens(config.hang_rate):
            return Refusal.HANG, config.hang_seconds
        return None, 0.0

    def _happens(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate
