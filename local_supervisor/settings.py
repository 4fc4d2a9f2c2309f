"""The supervisor's options: environment (read once) overridden by command-line flags."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from local_supervisor.stack import MAX_REPLICAS
from local_supervisor.state_file import state_file_path

DEFAULT_BASE_PORT = 50051
READY_SECONDS_PER_ZONE = 60.0  # the default wait for every process to be ready, per replica


def default_data_dir() -> Path:
    """`<repo>/.local`, where embedded PostgreSQL and Redis keep their data."""
    return Path(__file__).resolve().parent.parent / ".local"


class SupervisorSettings(BaseSettings):
    """What the environment says: external stores, base port, data directory."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str = ""
    redis_url: str = ""
    supervisor_base_port: int = Field(default=DEFAULT_BASE_PORT, ge=1, le=65535)
    gateway_port: int = Field(default=8080, ge=1, le=65535)
    psp_port: int = Field(default=8089, ge=1, le=65535)
    local_data_dir: Path = Field(default_factory=default_data_dir)
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Everything one `make run` needs to know."""

    data_dir: Path
    base_port: int
    http_ports: Mapping[str, int]  # the HTTP processes' ports, by name (gateway, psp)
    ready_timeout: float
    stop_grace: float
    skip_migrate: bool
    replicas: int  # of each replicated process, one per zone (local_supervisor.stack)
    psp_url: str | None  # an external PSP the stack calls; None: run the simulator
    database_url: str | None  # None: start an embedded PostgreSQL
    redis_url: str | None  # None: start an embedded Redis

    @property
    def state_file(self) -> Path:
        """Where the supervisor says which process runs with which pid where."""
        return state_file_path(self.data_dir)


def parse_options(argv: Sequence[str], settings: SupervisorSettings) -> RunOptions:
    """Combine the environment's settings with the command-line flags (flags win)."""
    parser = argparse.ArgumentParser(
        prog="python -m local_supervisor",
        description="Run the checkout platform locally: PostgreSQL and Redis (embedded unless "
        "DATABASE_URL / REDIS_URL are set), migrations, then every gRPC service.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=settings.local_data_dir,
        help="where embedded stores keep data and the state file lives (env LOCAL_DATA_DIR; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=settings.supervisor_base_port,
        help="first service port; services use base+0.. (env SUPERVISOR_BASE_PORT; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--gateway-port",
        type=int,
        default=settings.gateway_port,
        help="the HTTP gateway's port (env GATEWAY_PORT; default: %(default)s)",
    )
    parser.add_argument(
        "--psp-port",
        type=int,
        default=settings.psp_port,
        help="the PSP simulator's port (env PSP_PORT; default: %(default)s)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=None,
        help="seconds to wait for every service to be SERVING (default: "
        f"{READY_SECONDS_PER_ZONE:g} per replica: the processes start on the same cores)",
    )
    parser.add_argument(
        "--stop-grace",
        type=float,
        default=10.0,
        help="seconds between SIGTERM and SIGKILL when stopping (default: %(default)s)",
    )
    parser.add_argument(
        "--skip-migrate", action="store_true", help="do not run database migrations first"
    )
    parser.add_argument(
        "--replicas",
        type=_replicas_flag,
        default=settings.replicas,
        help="replicas of every service, worker and the gateway, replica i in zone i "
        "(zone-a, zone-b, ...); the PSP simulator and Redis run once (env REPLICAS; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--psp-url",
        default=None,
        help="call this PSP (e.g. one shared by two stacks) instead of starting the simulator",
    )
    args = parser.parse_args(argv)
    return RunOptions(
        data_dir=args.data_dir.expanduser().resolve(),
        base_port=args.base_port,
        http_ports={"gateway": args.gateway_port, "psp": args.psp_port},
        ready_timeout=(
            args.ready_timeout
            if args.ready_timeout is not None
            else READY_SECONDS_PER_ZONE * args.replicas
        ),
        stop_grace=args.stop_grace,
        skip_migrate=args.skip_migrate,
        replicas=args.replicas,
        psp_url=args.psp_url,
        database_url=settings.database_url or None,
        redis_url=settings.redis_url or None,
    )


def _replicas_flag(text: str) -> int:
    count = int(text)
    if not 1 <= count <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_REPLICAS}, not {count}")
    return count


def command_line(
    *,
    data_dir: Path,
    base_port: int,
    http_ports: Mapping[str, int],
    ready_timeout: float | None = None,
    replicas: int = 1,
    psp_url: str | None = None,
    skip_migrate: bool = False,
) -> list[str]:
    """The flags that make parse_options read these values: how a launcher (local_supervisor.
    launcher) tells `python -m local_supervisor` where to run."""
    argv = [
        "--data-dir", str(data_dir),
        "--base-port", str(base_port),
        "--gateway-port", str(http_ports["gateway"]),
        "--psp-port", str(http_ports["psp"]),
        "--replicas", str(replicas),
    ]  # fmt: skip
    if ready_timeout is not None:
        argv += ["--ready-timeout", repr(float(ready_timeout))]
    if psp_url is not None:
        argv += ["--psp-url", psp_url]
    if skip_migrate:
        argv.append("--skip-migrate")
    return argv
