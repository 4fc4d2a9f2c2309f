"""The gateway's tracing settings: the same OTEL_* names every other process reads.

GatewaySettings is not a ServiceSettings (it has no database), so the tracing settings are
read on their own here rather than copied into it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewayTracingSettings(BaseSettings):
    """OTEL_TRACES_EXPORTER, OTEL_TRACES_SAMPLER_ARG, OTEL_TRACES_JSONL_DIR for the gateway."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    service_name: str = "gateway"
    otel_traces_exporter: Literal["none", "console", "jsonl", "otlp"] = "none"
    otel_traces_jsonl_dir: Path = Path("data/traces")
    otel_traces_sampler_arg: float = Field(default=1.0, ge=0.0, le=1.0)
