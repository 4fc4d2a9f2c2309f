"""The local stack's table of services, and the process specs built from it."""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from local_supervisor.processes import ProcessSpec
from local_supervisor.readiness import GrpcHealthCheck, HttpReadyCheck, ReadinessCheck

GRPC_HOST = "127.0.0.1"
DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "ecs"
SAGA_DEFINITION = DEPLOY / "checkout_saga.asl.json"
EVENT_RULES = DEPLOY / "event_rules.json"
# PostgreSQL's default of 100 connections is shared by every process of the stack: a service
# (one asyncio loop on a 2-core machine) keeps at most 2 x 5, a worker that handles one batch at
# a time 2 x 2.
SERVICE_POOL = {"DB_POOL_SIZE": "5"}
SMALL_POOL = {"DB_POOL_SIZE": "2"}


@dataclass(frozen=True)
class StackEntry:
    """One process of the stack: its name, the module it runs, and its port (base + offset)."""

    name: str
    module: str
    port_offset: int | None  # None: no gRPC port, so no health check (e.g. a worker)
    env: Mapping[str, str] = field(default_factory=dict)  # its own settings
    http_port_env: str | None = None  # an HTTP process: the variable its port goes in
    ready_path: str | None = None  # ... and the path that answers 200 once it is ready


# Adding the gateway or a worker is one line here.
STACK: tuple[StackEntry, ...] = (
    StackEntry("cart", "services.cart", 0),
    StackEntry("inventory", "services.inventory", 1),
    StackEntry("payment", "services.payment", 2),
    StackEntry("checkout", "services.checkout", 3),
    StackEntry("psp", "simulators.psp", None, http_port_env="PSP_PORT", ready_path="/healthz"),
    # Runs the same state machine file Step Functions runs, calling the saga task handlers.
    StackEntry(
        "saga-engine", "workers.saga_engine", None, env={"SAGA_DEFINITION": str(SAGA_DEFINITION)}
    ),
    # Publishes every schema's outbox to the event bus, which routes into the consumers' queues.
    StackEntry("outbox-relay", "workers.outbox_relay", None, env=SMALL_POOL),
    # Side-effect consumers, one process each, reading their queues (routing: EVENT_RULES).
    StackEntry("shipping", "workers.consumers.shipping", None, env=SMALL_POOL),
    StackEntry("email", "workers.consumers.email", None, env=SMALL_POOL),
    StackEntry("invoice", "workers.consumers.invoice", None, env=SMALL_POOL),
    StackEntry("analytics", "workers.consumers.analytics", None, env=SMALL_POOL),
    # Whatever cancelled an order, these give its money and its units back (OrderCancelled).
    StackEntry("payment-release", "workers.consumers.payment_release", None, env=SMALL_POOL),
    StackEntry("stock-release", "workers.consumers.stock_release", None, env=SMALL_POOL),
    # /readyz answers 200 only once cart, inventory and checkout are SERVING.
    StackEntry("gateway", "gateway", None, http_port_env="GATEWAY_PORT", ready_path="/readyz"),
)
DEFAULT_HTTP_PORTS: Mapping[str, int] = {"psp": 8089, "gateway": 8080}


def service_specs(
    *,
    base_port: int,
    database_url: str,
    redis_url: str,
    http_ports: Mapping[str, int] = DEFAULT_HTTP_PORTS,
    extra_env: Mapping[str, str] | None = None,
    entries: tuple[StackEntry, ...] = STACK,
) -> list[ProcessSpec]:
    """The process specs of the stack's services: gRPC on base_port + offset, HTTP on its port."""
    specs = []
    targets = service_targets(base_port=base_port, http_ports=http_ports, entries=entries)
    for entry in entries:
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SERVICE_NAME": entry.name,
            **SERVICE_POOL,
            **targets,
            **(extra_env or {}),
            **entry.env,
        }
        readiness: ReadinessCheck | None = None
        if entry.port_offset is not None:
            port = base_port + entry.port_offset
            env |= {"GRPC_HOST": GRPC_HOST, "GRPC_PORT": str(port)}
            readiness = GrpcHealthCheck(f"{GRPC_HOST}:{port}")
        if entry.http_port_env is not None:
            http_port = http_ports[entry.name]
            env[entry.http_port_env] = str(http_port)
            if entry.ready_path is not None:
                readiness = HttpReadyCheck(GRPC_HOST, http_port, entry.ready_path)
        argv = [sys.executable, "-m", entry.module]
        specs.append(ProcessSpec(name=entry.name, argv=argv, env=env, readiness=readiness))
    return specs


def service_targets(
    *,
    base_port: int,
    http_ports: Mapping[str, int] = DEFAULT_HTTP_PORTS,
    entries: tuple[StackEntry, ...] = STACK,
) -> dict[str, str]:
    """Where each process listens, as the variables its callers read (CART_TARGET, PSP_URL)."""
    targets = {
        f"{entry.name.upper()}_TARGET": f"{GRPC_HOST}:{base_port + entry.port_offset}"
        for entry in entries
        if entry.port_offset is not None
    }
    targets |= {
        f"{entry.name.upper()}_URL": f"http://{GRPC_HOST}:{http_ports[entry.name]}"
        for entry in entries
        if entry.http_port_env is not None
    }
    return targets


def local_outputs(data_dir: Path) -> dict[str, str]:
    """Where the local stack keeps its side effects and the PSP its ledger, under data_dir."""
    return {
        "EVENT_RULES_FILE": str(EVENT_RULES),
        "RELAY_RULES_FILE": str(EVENT_RULES),
        "MAILER_URL": str(data_dir / "email-outbox"),
        "INVOICE_STORE_URL": str(data_dir / "documents"),
        "ANALYTICS_SINK_URL": str(data_dir / "analytics" / "order_facts.jsonl"),
        # The carrier simulator's bookings survive restarts; the chaos harness counts them.
        "CARRIER_BOOKINGS_PATH": str(data_dir / "carrier" / "bookings.sqlite3"),
        # Each stack its own PSP ledger: reconciliation must not see another stack's intents.
        "PSP_DATA_DIR": str(data_dir / "psp"),
    }


def migration_spec(*, database_url: str) -> ProcessSpec:
    """The one-off process that brings the database schema up to date."""
    argv = [sys.executable, "-m", "marketplace_platform.migrate"]
    return ProcessSpec(name="migrate", argv=argv, env={"DATABASE_URL": database_url})


def ports_in_use(
    *,
    base_port: int,
    http_ports: Mapping[str, int] = DEFAULT_HTTP_PORTS,
    entries: tuple[StackEntry, ...] = STACK,
) -> list[str]:
    """The stack's ports that something already listens on, as "name (port)"."""
    taken = []
    for entry in entries:
        if entry.port_offset is not None:
            port = base_port + entry.port_offset
        elif entry.http_port_env is not None:
            port = http_ports[entry.name]
        else:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((GRPC_HOST, port))
            except OSError:
                taken.append(f"{entry.name} ({port})")
    return taken
