"""The gateway's settings, read once from the environment (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from marketplace_platform.settings import DEV_REDIS_URL, AppEnv

REPO = Path(__file__).resolve().parents[1]

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
    # The HS256 secret from Secrets Manager instead (re-read every SECRETS_TTL_SECONDS).
    gateway_jwt_secret_arn: str | None = None
    # An identity provider's keys (RS256/ES256), e.g. Cognito's
    # https://cognito-idp.<region>.amazonaws.com/<pool id>/.well-known/jwks.json; its tokens
    # must carry this `iss` and `aud`.
    gateway_jwks_url: str | None = None
    gateway_jwt_issuer: str | None = None
    gateway_jwt_audience: str | None = None
    # The identity provider's scopes count only with this prefix, taken off (Cognito: the
    # resource server's identifier and "/", e.g. "checkout/" for "checkout/admin").
    gateway_jwt_scope_prefix: str = ""
    # The longest `exp - iat` accepted from any source (Cognito issues at most one day).
    gateway_jwt_max_lifetime_seconds: float = Field(default=86_400.0, gt=0)
    gateway_jwks_timeout_seconds: float = Field(default=2.0, gt=0)
    gateway_jwks_cache_seconds: float = Field(default=300.0, gt=0)
    # The least time between two fetches forced by tokens naming an unknown `kid`.
    gateway_jwks_refresh_cooldown_seconds: float = Field(default=30.0, ge=0)
    # How long a value read from Secrets Manager is used before it is read again.
    secrets_ttl_seconds: float = Field(default=300.0, gt=0)
    # The Redis AUTH token from Secrets Manager (JSON {"token": ...}), for new connections.
    redis_auth_token_secret_arn: str | None = None
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
    # Prometheus metrics on http://METRICS_HOST:METRICS_PORT/metrics; 0: not served.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # The operator console (/ops, gateway/ops): the platform's database it reads, read-only
    # apart from its two redrives; unset, /ops/api answers 503 "operator console not configured".
    ops_database_url: str | None = None
    ops_db_pool_size: int = Field(default=2, ge=1)
    ops_statement_timeout_ms: int = Field(default=2_000, ge=100)
    # The payment process's Prometheus endpoint, where the PSP breaker's state is read; unset,
    # that alarm is reported unknown.
    ops_payment_metrics_url: str | None = None
    ops_payment_metrics_timeout_seconds: float = Field(default=1.0, gt=0)
    ops_alert_rules_file: Path = REPO / "deploy" / "prometheus" / "rules.yml"
    ops_saga_definition: Path = REPO / "deploy" / "ecs" / "checkout_saga.asl.json"
    # The queues the console shows and redrives, as the outbox relay reads them (same names).
    relay_rules_file: Path = REPO / "deploy" / "ecs" / "event_rules.json"
    relay_queue_prefix: str = ""
    # A RUNNING saga execution in one state longer than this is stuck (the relay's gauge).
    relay_stuck_after_seconds: float = Field(default=300.0, gt=0)

    @property
    def uses_shared_secret(self) -> bool:
        """Whether HS256 tokens are accepted: with a secret of its own (set, or from Secrets
        Manager), or with the development secret while no JWKS is configured (never in
        production)."""
        if self.gateway_jwt_secret_arn or self.gateway_jwt_secret != DEV_JWT_SECRET:
            return True
        return self.gateway_jwks_url is None and self.app_env is not AppEnv.PRODUCTION

    @model_validator(mode="after")
    def _refuse_dev_secret_in_production(self) -> Self:
        if self.gateway_jwks_url and not (self.gateway_jwt_issuer and self.gateway_jwt_audience):
            raise ValueError("GATEWAY_JWKS_URL needs GATEWAY_JWT_ISSUER and GATEWAY_JWT_AUDIENCE")
        if self.app_env is AppEnv.PRODUCTION:
            if not (self.gateway_jwks_url or self.uses_shared_secret):
                raise ValueError(
                    "production needs GATEWAY_JWKS_URL, GATEWAY_JWT_SECRET_ARN or its own"
                    " GATEWAY_JWT_SECRET (the development secret is refused)"
                )
            if self.redis_url == DEV_REDIS_URL:
                raise ValueError("production needs an explicit REDIS_URL")
        return self
