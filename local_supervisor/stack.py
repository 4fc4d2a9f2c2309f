"""The local stack's table of services, and the process specs built from it: each replicated
entry runs once per zone (replica i in zone i), every gRPC replica on a port of its own."""

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
# With N replicas each gets 1/N of its pool (at least 1), so the stack stays within them.
POOL_SETTING = "DB_POOL_SIZE"
# Zone i's gRPC services listen on base + offset + i * stride (zone-a on base + offset).
ZONE_PORT_STRIDE = 100
MAX_REPLICAS = 26  # zone-a .. zone-z
# A replica's process name when there is more than one: "checkout@zone-b".
ZONE_MARK = "@"
# Each process but the PSP simulator (the outside world) serves Prometheus metrics on a port of
# its own, in this variable (marketplace_platform.metrics): its zone's base + METRICS_OFFSET +
# the entry's position in the table, inside the stack's block like every other port, so the
# supervisor's probe (ports_in_use) checks the ports the processes will bind.
METRICS_PORT_ENV = "METRICS_PORT"
METRICS_OFFSET = 20
DB_GAUGES_ENTRY = "outbox-relay"  # sets the gauges that need database queries
# The gateway's operator console (/ops) reads the stack's database and its zone's payment
# process's metrics (the PSP breaker).
CONSOLE_ENTRY = "gateway"
BREAKER_ENTRY = "payment"


@dataclass(frozen=True)
class StackEntry:
    """One process of the stack: its name, the module it runs, and its port (base + offset)."""

    name: str
    module: str
    port_offset: int | None  # None: no gRPC port, so no health check (e.g. a worker)
    env: Mapping[str, str] = field(default_factory=dict)  # its own settings
    http_port_env: str | None = None  # an HTTP process: the variable its port goes in
    ready_path: str | None = None  # ... and the path that answers 200 once it is ready
    replicated: bool = True  # one per zone; False: one for the whole stack (the PSP)
    # What a replicated HTTP process is told so that every zone's replica shares its port.
    shared_port_env: Mapping[str, str] = field(default_factory=dict)


def zone_name(index: int) -> str:
    """The zone of replica `index`: zone-a, zone-b, ..."""
    if not 0 <= index < MAX_REPLICAS:
        raise ValueError(f"no zone for replica {index} (at most {MAX_REPLICAS} replicas)")
    return f"zone-{chr(ord('a') + index)}"


def replica_name(name: str, zone: str, replicas: int) -> str:
    """A replica's process name: the entry's own with one replica, "name@zone" with more."""
    return name if replicas == 1 else f"{name}{ZONE_MARK}{zone}"


def role_of(process_name: str) -> str:
    """The stack entry a process is a replica of ("checkout@zone-b" -> "checkout")."""
    return process_name.partition(ZONE_MARK)[0]


def grpc_port(entry: StackEntry, *, base_port: int, zone_index: int = 0) -> int:
    """The port of an entry's gRPC replica in zone `zone_index`."""
    if entry.port_offset is None:
        raise ValueError(f"{entry.name} has no gRPC port")
    return base_port + entry.port_offset + zone_index * ZONE_PORT_STRIDE


def metrics_port(position: int, *, base_port: int, zone_index: int = 0) -> int:
    """The metrics port of the process of table position `position` in zone `zone_index`."""
    return base_port + METRICS_OFFSET + position + zone_index * ZONE_PORT_STRIDE


def stack_span(replicas: int = 1) -> int:
    """How many ports from the base port a stack of `replicas` zones may use."""
    return replicas * ZONE_PORT_STRIDE


def _replica_count(entry: StackEntry, replicas: int) -> int:
    return replicas if entry.replicated else 1


PSP = "psp"  # the PSP simulator's entry

# Adding the gateway or a worker is one line here.
STACK: tuple[StackEntry, ...] = (
    StackEntry("cart", "services.cart", 0),
    StackEntry("inventory", "services.inventory", 1),
    StackEntry("payment", "services.payment", 2),
    StackEntry("checkout", "services.checkout", 3),
    # The outside world: one for the stack, whatever the zones.
    StackEntry(
        PSP,
        "simulators.psp",
        None,
        http_port_env="PSP_PORT",
        ready_path="/healthz",
        replicated=False,
    ),
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
    # /readyz answers 200 only once cart, inventory and checkout are SERVING. Each zone's
    # gateway binds the one port with SO_REUSEPORT; the kernel spreads connections over them.
    StackEntry(
        "gateway",
        "gateway",
        None,
        http_port_env="GATEWAY_PORT",
        ready_path="/readyz",
        shared_port_env={"GATEWAY_REUSE_PORT": "true"},
    ),
)
assert METRICS_OFFSET + len(STACK) <= ZONE_PORT_STRIDE, "metrics ports run into the next zone's"
DEFAULT_HTTP_PORTS: Mapping[str, int] = {"psp": 8089, "gateway": 8080}


def service_specs(
    *,
    base_port: int,
    database_url: str,
    redis_url: str,
    http_ports: Mapping[str, int] = DEFAULT_HTTP_PORTS,
    extra_env: Mapping[str, str] | None = None,
    entries: tuple[StackEntry, ...] = STACK,
    replicas: int = 1,
    psp_url: str | None = None,
) -> list[ProcessSpec]:
    """The process specs of the stack's services, `replicas` of each replicated entry (zone by
    zone): gRPC on its zone's port, HTTP on its port, ZONE in every replica's environment.
    With `psp_url` the stack calls that PSP (the outside world, shared by several stacks, e.g.
    two Regions) and starts no simulator of its own."""
    positions = {entry.name: position for position, entry in enumerate(entries)}
    if psp_url is not None:
        entries = tuple(entry for entry in entries if entry.name != PSP)
    targets = service_targets(
        base_port=base_port, http_ports=http_ports, entries=entries, replicas=replicas
    )
    if psp_url is not None:
        targets["PSP_URL"] = psp_url
    common = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, **SERVICE_POOL, **targets}
    specs: list[ProcessSpec] = []
    for zone_index in range(replicas):
        zone = zone_name(zone_index)
        for entry in entries:
            if zone_index >= _replica_count(entry, replicas):
                continue
            env = {"SERVICE_NAME": entry.name, **common, **(extra_env or {}), **entry.env}
            if entry.replicated:
                env["ZONE"] = zone
                env[POOL_SETTING] = str(max(1, int(env[POOL_SETTING]) // replicas))
            readiness: ReadinessCheck | None = None
            if entry.port_offset is not None:
                port = grpc_port(entry, base_port=base_port, zone_index=zone_index)
                env |= {"GRPC_HOST": GRPC_HOST, "GRPC_PORT": str(port)}
                readiness = GrpcHealthCheck(f"{GRPC_HOST}:{port}")
            if entry.http_port_env is not None:
                http_port = http_ports[entry.name]
                env[entry.http_port_env] = str(http_port)
                if _replica_count(entry, replicas) > 1:
                    env |= entry.shared_port_env
                if entry.ready_path is not None:
                    readiness = HttpReadyCheck(GRPC_HOST, http_port, entry.ready_path)
            if entry.name != PSP:
                port = metrics_port(
                    positions[entry.name], base_port=base_port, zone_index=zone_index
                )
                env[METRICS_PORT_ENV] = str(port)
            if entry.name == DB_GAUGES_ENTRY and zone_index > 0:
                env["RELAY_DB_GAUGES"] = "false"  # one process queries them, not every zone's
            if entry.name == CONSOLE_ENTRY:
                env["OPS_DATABASE_URL"] = database_url
                breaker = next(
                    (s for s in specs if role_of(s.name) == BREAKER_ENTRY and s.zone == zone), None
                )
                if breaker is not None:
                    metrics = f"http://{GRPC_HOST}:{breaker.env[METRICS_PORT_ENV]}/metrics"
                    env["OPS_PAYMENT_METRICS_URL"] = metrics
            name = replica_name(entry.name, zone, _replica_count(entry, replicas))
            argv = [sys.executable, "-m", entry.module]
            specs.append(
                ProcessSpec(
                    name=name,
                    argv=argv,
                    env=env,
                    readiness=readiness,
                    zone=zone if entry.replicated else None,
                )
            )
    return specs


def metrics_line(specs: list[ProcessSpec]) -> str:
    """Where each process serves its metrics, as the supervisor prints it once ready."""
    where = [
        f"{spec.name}=http://{GRPC_HOST}:{spec.env[METRICS_PORT_ENV]}/metrics"
        for spec in specs
        if spec.env.get(METRICS_PORT_ENV)
    ]
    return "metrics: " + " ".join(where)


def service_targets(
    *,
    base_port: int,
    http_ports: Mapping[str, int] = DEFAULT_HTTP_PORTS,
    entries: tuple[StackEntry, ...] = STACK,
    replicas: int = 1,
) -> dict[str, str]:
    """Where each process listens, as the variables its callers read (CART_TARGET, PSP_URL): a
    gRPC service's every replica, comma-separated (marketplace_platform.channels)."""
    targets = {
        f"{entry.name.upper()}_TARGET": ",".join(
            f"{GRPC_HOST}:{grpc_port(entry, base_port=base_port, zone_index=zone_index)}"
            for zone_index in range(_replica_count(entry, replicas))
        )
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
        "ANALYTICS_SINK_URL": str(data_dir / "analytics"),
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
    replicas: int = 1,
) -> list[str]:
    """The stack's ports that something already listens on, as "name (port)"."""
    wanted: list[tuple[str, int]] = []
    for position, entry in enumerate(entries):
        count = _replica_count(entry, replicas)
        names = [
            (index, replica_name(entry.name, zone_name(index), count)) for index in range(count)
        ]
        if entry.port_offset is not None:
            wanted += [
                (name, grpc_port(entry, base_port=base_port, zone_index=index))
                for index, name in names
            ]
        elif entry.http_port_env is not None:
            wanted.append((entry.name, http_ports[entry.name]))
        if entry.name != PSP:
            wanted += [
                (f"{name} metrics", metrics_port(position, base_port=base_port, zone_index=index))
                for index, name in names
            ]
    taken = []
    for name, port in wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((GRPC_HOST, port))
            except OSError:
                taken.append(f"{name} ({port})")
    return taken
