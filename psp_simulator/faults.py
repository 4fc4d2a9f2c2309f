"""Fault injection: what can go wrong on a POST, and the dice that decide it per request."""

from __future__ import annotations

import random
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


class Refusal(StrEnum):
    """A fault that answers 500 without applying the operation."""

    ERROR = "error"
    HANG = "hang"


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    """What one request suffers: before handling, instead of it, or after it."""

    latency_seconds: float = 0.0
    refusal: Refusal | None = None
    hang_seconds: float = 0.0
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
    """Holds the fault configuration (replaceable at run time) and rolls the dice."""

    def __init__(self, config: FaultConfig, *, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()

    @property
    def config(self) -> FaultConfig:
        """The configuration in force."""
        return self._config

    def replace(self, config: FaultConfig) -> None:
        """Put a new configuration in force for the requests that arrive from now on."""
        self._config = config

    def plan(self) -> FaultPlan:
        """Decide the faults of one request."""
        config = self._config
        refusal = None
        if self._happens(config.error_rate):
            refusal = Refusal.ERROR
        elif self._happens(config.hang_rate):
            refusal = Refusal.HANG
        return FaultPlan(
            latency_seconds=config.latency_ms / 1000,
            refusal=refusal,
            hang_seconds=config.hang_seconds,
            ambiguous=refusal is None and self._happens(config.ambiguous_rate),
            response_delay_seconds=config.response_delay_ms / 1000,
        )

    def _happens(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate
