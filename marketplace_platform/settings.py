"""Typed settings, read once from the environment (pydantic-settings)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/marketplace"
DEV_REDIS_URL = "redis://127.0.0.1:6379/0"


class AppEnv(StrEnum):
    """Where the process runs; production refuses development defaults."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class TracingSettings(BaseSettings):
    """What tracing reads (marketplace_platform.telemetry): every process's, the gateway's too,
    whose own settings have no database and so are not ServiceSettings."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    service_name: str = "service"
    # jsonl: OTLP/JSON lines in OTEL_TRACES_JSONL_DIR/<service>.jsonl (local, no collector);
    # otlp: OTLP over gRPC to OTEL_EXPORTER_OTLP_ENDPOINT (the ADOT sidecar on AWS).
    otel_traces_exporter: Literal["none", "console", "jsonl", "otlp"] = "none"
    otel_traces_jsonl_dir: Path = Path("data/traces")
    # The share of new traces sampled while tracing is on (parent-based: a traced caller's
    # decision is kept). Standard OpenTelemetry name; OTEL_TRACES_SAMPLER itself is not read.
    otel_traces_sampler_arg: float = Field(default=1.0, ge=0.0, le=1.0)


class ServiceSettings(TracingSettings):
    """Settings every gRPC service shares; services subclass it for their own fields."""

    app_env: AppEnv = AppEnv.DEVELOPMENT
    database_url: str = DEV_DATABASE_URL
    redis_url: str = DEV_REDIS_URL
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=0, ge=0, le=65535)
    db_pool_size: int = Field(default=10, ge=1)
    db_statement_timeout_ms: int = Field(default=5_000, ge=100)
    # The Region epoch this process writes as (marketplace_platform.fence): its writes are
    # refused once the database's fence holds another epoch.
    region_epoch: int = Field(default=1, ge=1)
    shutdown_grace_seconds: float = Field(default=10.0, gt=0)
    health_probe_interval_seconds: float = Field(default=2.0, gt=0)
    health_probe_timeout_seconds: float = Field(default=1.0, gt=0)
    # Timed-out probes in a row a SERVING server rides out (busy, not down); a failed one counts
    # at once (marketplace_platform.grpc_server._follow_readiness).
    health_probe_timeouts_tolerated: int = Field(default=2, ge=0)
    default_call_timeout_seconds: float = Field(default=5.0, gt=0)
    migrate_on_start: bool = True
    log_level: str = "INFO"
    # Prometheus metrics on http://METRICS_HOST:METRICS_PORT/metrics; 0: not served.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)

    @model_validator(mode="after")
    def _refuse_dev_defaults_in_production(self) -> Self:
        if self.app_env is AppEnv.PRODUCTION:
            defaults = {"DATABASE_URL": DEV_DATABASE_URL, "REDIS_URL": DEV_REDIS_URL}
            current = {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url}
            unset = [name for name, value in defaults.items() if current[name] == value]
            if unset:
                raise ValueError(f"production needs explicit {', '.join(unset)}")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the asyncpg driver named, as SQLAlchemy wants it."""
        return to_asyncpg_url(self.database_url)


def to_asyncpg_url(url: str) -> str:
    """Turn postgresql:// (or postgres://) into postgresql+asyncpg://; leave others alone."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url
