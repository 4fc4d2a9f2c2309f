"""The adapters' settings, read once from the environment (pydantic-settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AdapterSettings(BaseSettings):
    """Where the services listen and how long a step may wait for one."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    inventory_target: str = "127.0.0.1:50052"
    payment_target: str = "127.0.0.1:50053"
    checkout_target: str = "127.0.0.1:50054"
    # Below each Task's TimeoutSeconds in the definition, so the call gives up first and the
    # state sees a RetryableError rather than States.Timeout.
    call_timeout_seconds: float = Field(default=8.0, gt=0)
    # The payment service may try the PSP several times (and resolve lost answers) per call.
    payment_call_timeout_seconds: float = Field(default=18.0, gt=0)
    # How long authorization keeps retrying while the PSP fails, counted from the saga's start;
    # only past it is the order cancelled as a timeout. Well inside the execution's 600 s.
    authorization_budget_seconds: float = Field(default=60.0, gt=0, le=400)
    # What is kept back from the invocation's remaining time to report the error.
    deadline_margin_seconds: float = Field(default=0.5, ge=0)
    # Longer than the state machine's overall TimeoutSeconds (600), so a running saga never
    # loses its stock to the sweeper.
    reservation_ttl_seconds: int = Field(default=900, ge=601, le=86_400)
