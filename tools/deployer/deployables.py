"""What runs on AWS: every long-running process (and one-off task) and its needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .paths import REPO


@dataclass(frozen=True)
class Deployable:
    """One long-running process of the platform on ECS: its module, port and permissions."""

    name: str
    module: str
    port: int | None = None  # gRPC (or HTTP for the gateway); None: a worker without a port
    http: bool = False
    critical: bool = True  # False: Fargate Spot first (the queue keeps the work while it waits)
    cpu: int = 512
    memory: int = 1024
    min_tasks: int = 2
    max_tasks: int = 10
    calls: tuple[str, ...] = ()  # the gRPC services it calls: <NAME>_TARGET through Service Connect
    secrets: tuple[str, ...] = ("database", "redis")
    permissions: tuple[str, ...] = ()  # see _CAPABILITIES
    queue: str | None = None  # the SQS queue it consumes (a declared queue of event_rules.json)
    env: Mapping[str, str] = field(default_factory=dict)
    # False: a task definition only, for one-off tasks an operator runs (aws ecs run-task).
    long_running: bool = True


DEPLOYABLES: tuple[Deployable, ...] = (
    Deployable("cart", "services.cart", 50051),
    Deployable("inventory", "services.inventory", 50052),
    Deployable("payment", "services.payment", 50053, secrets=("database", "redis", "psp")),
    Deployable(
        "checkout",
        "services.checkout",
        50054,
        calls=("cart", "payment"),
        permissions=("start_saga",),
        env={"SAGA_BACKEND": "stepfunctions"},
    ),
    Deployable(
        "gateway",
        "gateway",
        8080,
        http=True,
        calls=("cart", "inventory", "checkout"),
        secrets=("redis", "jwt"),
        env={"GATEWAY_HOST": "0.0.0.0"},
    ),
    Deployable("outbox-relay", "workers.outbox_relay", permissions=("publish_events",)),
    Deployable(
        "shipping-consumer",
        "workers.consumers.shipping",
        queue="shipping",
        calls=("checkout", "payment"),
    ),
    Deployable(
        "email-consumer",
        "workers.consumers.email",
        queue="email",
        critical=False,
        permissions=("send_email",),
        min_tasks=1,
    ),
    Deployable(
        "invoice-consumer",
        "workers.consumers.invoice",
        queue="invoice",
        critical=False,
        permissions=("write_invoices",),
        min_tasks=1,
    ),
    Deployable(
        "analytics-consumer",
        "workers.consumers.analytics",
        queue="analytics",
        critical=False,
        permissions=("write_exports",),
        min_tasks=1,
    ),
    # Whatever cancelled an order, these give back its money and its units (OrderCancelled).
    Deployable(
        "payment-release-consumer",
        "workers.consumers.payment_release",
        queue="payment-release",
        calls=("payment",),
    ),
    Deployable(
        "stock-release-consumer",
        "workers.consumers.stock_release",
        queue="stock-release",
        calls=("inventory",),
    ),
    # The operators' queue tool (list, inspect DLQs, redrive), run as a one-off task.
    Deployable(
        "queue-admin",
        "workers.queue_admin",
        # It only calls SQS, but the shared settings refuse to start in production without
        # explicit DATABASE_URL and REDIS_URL.
        permissions=("administer_queues",),
        long_running=False,
        env={"QUEUE_BACKEND": "sqs"},
    ),
)

# Processes that run only on a developer's machine, and what replaces them on AWS.
LOCAL_ONLY: Mapping[str, str] = {
    "workers.saga_engine": "Step Functions runs the same state machine file on AWS",
    "simulators.psp": "a real payment provider, reached through PSP_URL, on AWS",
}

# Where runnable packages live: every `<dir>/**/__main__.py` below these is a deployable.
DEPLOYABLE_ROOTS = ("services", "gateway", "workers", "simulators")


def runnable_modules(repo: Path = REPO) -> set[str]:
    """Every module of the repository a process runs with `python -m` (has a __main__.py)."""
    modules = set()
    for root in DEPLOYABLE_ROOTS:
        for main in (repo / root).rglob("__main__.py"):
            package = main.parent.relative_to(repo)
            if not any(part.startswith((".", "_")) for part in package.parts):
                modules.add(".".join(package.parts))
    return modules


def module_exists(module: str, repo: Path = REPO) -> bool:
    """Whether `python -m module` would find the module in this repository."""
    path = repo.joinpath(*module.split("."))
    return (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()


def present_deployables(repo: Path = REPO) -> tuple[Deployable, ...]:
    """The deployables whose module is in the repository (a declared but unwritten one waits)."""
    return tuple(d for d in DEPLOYABLES if module_exists(d.module, repo))
