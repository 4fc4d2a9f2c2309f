"""The gateway's settings, read once from the environment (pydantic-settings)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from marketplace_platform.settings import DEV_REDIS_URL, AppEnv

# Signs and checks tokens on developer machines only: production refuses to start with it.
DEV_JWT_SECRET = "dev-only-gateway-secret-do-not-use-in-production"


class GatewaySettings(BaseSettings):
    """Where the gateway listens, how it checks tokens, what it calls, and its limits."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    service_name: str = "gateway"
    app_env: AppEnv = AppEnv.DEVELOPMENT
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    # Bind the port with SO_REUSEPORT: one gateway per zone on the same port (local stack).
    gateway_reuse_port: bool = False
    gateway_jwt_secret: str = Field(default=DEV_JWT_SECRET, min_length=32)
    redis_url: str = DEV_REDIS_URL
    cart_target: str = "127.0.0.1:50051"
    inventory_target: str = "127.0.0.1:50052"
    checkout_target: str = "127.0.0.1:50054"
    # Per customer: a steady rate and the burst above it (token bucket in Redis).
    gateway_rate_per_second: float = Field(default=20.0, gt=0)
    gateway_burst: int = Field(default=40, ge=1)
    # Requests handled at once by this process; the next one is shed with 503 at once.
    gateway_max_concurrent_requests: int = Field(default=256, ge=1)
    # What one request may spend in total, upstream calls included.
    gateway_request_budget_seconds: float = Field(default=5.0, gt=0)
    gateway_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # How long Redis may take before throttling fails open for this request (a burst of new
    # connections must fit in it).
    gateway_redis_timeout_seconds: float = Field(default=0.25, gt=0)
    gateway_shutdown_grace_seconds: float = Field(default=10.0, gt=0)
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_dev_secret_in_production(self) -> Self:
        if self.app_env is AppEnv.PRODUCTION:
            if self.gateway_jwt_secret == DEV_JWT_SECRET:
                raise ValueError("production needs its own GATEWAY_JWT_SECRET")
            if self.redis_url == DEV_REDIS_URL:
                raise ValueError("production needs an explicit REDIS_URL")
        return self
