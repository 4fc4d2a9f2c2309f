"""Who calls whom on AWS: the graph the security groups of cluster.yaml must implement.

One edge per caller and callee. A callee is a gRPC service (or the HTTP gateway) of DEPLOYABLES,
or a data store ("database": Aurora, "redis": ElastiCache). The gRPC edges of the ECS
deployables are their `Deployable.calls` (which also set their `<NAME>_TARGET`); this module adds
the callers outside ECS (the saga adapter Lambdas, API Gateway's VPC link) and which deployables
use which data store. tests/unit/test_deploy_network.py holds the graph to the code (each
process's `*_target` settings, its imports of a database or Redis client) and to the templates
(every ingress rule is an edge, every edge a rule).
"""

from __future__ import annotations

from collections.abc import Mapping

from .cfn import logical_id
from .deployables import DEPLOYABLES

# Port per data store; the stores' own security groups live in data.yaml and cache.yaml and
# admit one "clients" group each, which cluster.yaml defines and the users of the store carry.
STORES: Mapping[str, int] = {"database": 5432, "redis": 6379}

# Callers that are not ECS deployables: their callees.
# The saga adapter Lambdas, each in a security group of its own, by step (saga_tasks.<step
# module>, hyphenated): the one service each calls (its `clients.<service>()` stub).
ADAPTER_CALLS: Mapping[str, str] = {
    "calculate-tax": "checkout",
    "fraud-check": "checkout",
    "reserve-inventory": "inventory",
    "authorize-payment": "payment",
    "commit-reservation": "inventory",
    "confirm-order": "checkout",
    "void-payment": "payment",
    "release-inventory": "inventory",
    "fail-order": "checkout",
}
VPC_LINK = "vpc-link"  # API Gateway's VPC link: the edge's only way in


def adapter(step: str) -> str:
    """The caller name of a step's adapter Lambda: "adapter-calculate-tax"."""
    return f"adapter-{step}"


OTHER_CALLERS: Mapping[str, frozenset[str]] = {
    **{adapter(step): frozenset({callee}) for step, callee in ADAPTER_CALLS.items()},
    VPC_LINK: frozenset({"gateway"}),
}

# Which deployables open connections to which store. Every process gets a REDIS_URL (the shared
# settings refuse production without one), but only these connect to Redis.
STORE_USERS: Mapping[str, frozenset[str]] = {
    "database": frozenset(d.name for d in DEPLOYABLES if "database" in d.secrets),
    "redis": frozenset({"cart", "gateway"}),
}

# The deployables that handle card data: their own subnets, reached by their callers only.
CARD_DATA = frozenset({"payment"})


def caller_graph() -> dict[str, frozenset[str]]:
    """Every caller (deployable, adapters, VPC link) and everything it calls."""
    graph = {
        d.name: frozenset(d.calls)
        | {store for store, users in STORE_USERS.items() if d.name in users}
        for d in DEPLOYABLES
    }
    graph.update(OTHER_CALLERS)
    return graph


def ports() -> dict[str, int]:
    """The port every callee listens on: the services' and the stores'."""
    found = {d.name: d.port for d in DEPLOYABLES if d.port is not None}
    return {**found, **STORES}


def security_group(name: str) -> str:
    """The logical id of a caller's or callee's security group in cluster.yaml."""
    if name in STORES:
        return f"{logical_id(name)}ClientsSecurityGroup"
    return f"{logical_id(name)}SecurityGroup"


def carried_security_groups(name: str) -> list[str]:
    """The security groups a deployable's tasks carry: its own, and the clients group of each
    data store it connects to (logical ids in cluster.yaml)."""
    stores = [store for store, users in STORE_USERS.items() if name in users]
    return [security_group(name), *(security_group(store) for store in stores)]
