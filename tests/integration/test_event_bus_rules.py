"""The routing file and the local bus's EventBridge pattern matcher (no servers needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marketplace_platform.event_bus.rules import load_routing, matches

EVENT = {
    "source": "marketplace.checkout",
    "detail-type": "marketplace.events.v1.OrderPlaced",
    "detail": {"producer": "checkout", "aggregateType": "order"},
}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"detail-type": ["marketplace.events.v1.OrderPlaced"]}, True),
        ({"detail-type": ["marketplace.events.v1.OrderCancelled"]}, False),
        ({"source": [{"prefix": "marketplace."}]}, True),
        ({"source": [{"prefix": "other."}]}, False),
        ({"source": [{"suffix": ".checkout"}]}, True),
        ({"source": [{"anything-but": ["marketplace.checkout"]}]}, False),
        ({"source": [{"anything-but": {"prefix": "x."}}]}, True),
        ({"detail": {"aggregateType": ["order"]}}, True),
        ({"detail": {"aggregateType": ["payment"]}}, False),
        ({"detail": {"missing": [{"exists": False}]}}, True),
        ({"detail": {"missing": [{"exists": True}]}}, False),
        ({"detail": {"producer": [{"exists": True}]}}, True),
        ({"source": ["marketplace.checkout"], "detail-type": ["nope"]}, False),
    ],
)
def test_patterns_match_as_eventbridge_does(pattern: dict[str, object], expected: bool) -> None:
    assert matches(pattern, EVENT) is expected


def test_the_shipped_rules_file_loads_and_routes() -> None:
    routing = load_routing()
    assert {q.name for q in routing.queues} == {
        "shipping", "email", "invoice", "analytics", "payment-release", "stock-release",
    }  # fmt: skip
    assert all(q.dead_letter_queue == f"{q.name}-dlq" for q in routing.queues)
    assert routing.targets(EVENT) == ["email", "invoice", "analytics"]
    cancelled = EVENT | {"detail-type": "marketplace.events.v1.OrderCancelled"}
    # Whatever cancelled the order, its money and its stock are given back.
    assert set(routing.targets(cancelled)) == {
        "shipping", "email", "invoice", "payment-release", "stock-release", "analytics",
    }  # fmt: skip


def test_a_rule_targeting_an_undeclared_queue_is_refused(tmp_path: Path) -> None:
    document = json.loads(Path("deploy/ecs/event_rules.json").read_text())
    document["rules"][0]["targets"] = ["nowhere"]
    broken = tmp_path / "rules.json"
    broken.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="nowhere"):
        load_routing(broken)
