"""The simulator's settings, read once from PSP_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from simulators.psp.faults import FaultConfig

DEFAULT_PORT = 8089


def default_data_dir() -> Path:
    """`<repo>/.local/psp`, where the simulator keeps its SQLite file."""
    return Path(__file__).resolve().parent.parent / ".local" / "psp"


class PspSettings(BaseSettings):
    """Where to listen, where to keep state, and the faults to inject from the start."""

    model_config = SettingsConfigDict(env_prefix="PSP_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    log_level: str = "INFO"
    shutdown_grace_seconds: int = Field(default=3, ge=1)  # then in-flight requests are cut
    fault_latency_ms: int = Field(default=0, ge=0)
    fault_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    fault_hang_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    fault_hang_seconds: float = Field(default=30.0, ge=0.0)
    fault_ambiguous_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    fault_response_delay_ms: int = Field(default=0, ge=0)
    fault_conflict_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    fault_rate_limit_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    fault_rate_limit_seconds: float = Field(default=0.0, ge=0.0)  # counted from the start
    fault_retry_after_seconds: int = Field(default=1, ge=0)
    fault_outage_seconds: float = Field(default=0.0, ge=0.0)  # counted from the start
    fault_outage_hang: bool = False

    @property
    def database_path(self) -> Path:
        """The SQLite file that holds every intent, refund and idempotency key."""
        return self.data_dir / "psp.sqlite3"

    def initial_faults(self) -> FaultConfig:
        """The fault configuration the process starts with."""
        return FaultConfig(
            latency_ms=self.fault_latency_ms,
            error_rate=self.fault_error_rate,
            hang_rate=self.fault_hang_rate,
            hang_seconds=self.fault_hang_seconds,
            ambiguous_rate=self.fault_ambiguous_rate,
            response_delay_ms=self.fault_response_delay_ms,
            conflict_rate=self.fault_conflict_rate,
            rate_limit_rate=self.fault_rate_limit_rate,
            rate_limit_seconds=self.fault_rate_limit_seconds,
            retry_after_seconds=self.fault_retry_after_seconds,
            outage_seconds=self.fault_outage_seconds,
            outage_hang=self.fault_outage_hang,
        )
