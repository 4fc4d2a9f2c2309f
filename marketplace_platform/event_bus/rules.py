"""The routing file (deploy/ecs/event_rules.json): rules (event pattern -> queues) and queues.

Patterns are EventBridge event patterns; `matches` implements the subset we use (exact values,
prefix, suffix, anything-but, exists, nested objects), so the local bus routes as EventBridge does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from marketplace_platform.queues import QueueDefinition
from marketplace_platform.queues.definitions import DEFAULT_RULES_FILE, load_queue_definitions


@dataclass(frozen=True)
class Rule:
    """An EventBridge rule: events matching the pattern go to each target queue."""

    name: str
    event_pattern: Mapping[str, Any]
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Routing:
    """The bus's name, its rules and the queues they target."""

    event_bus_name: str
    rules: tuple[Rule, ...]
    queues: tuple[QueueDefinition, ...]

    def targets(self, event: Mapping[str, Any]) -> list[str]:
        """The queues an event goes to, each once, in rule order."""
        found: list[str] = []
        for rule in self.rules:
            if matches(rule.event_pattern, event):
                found.extend(target for target in rule.targets if target not in found)
        return found

    def prefixed(self, prefix: str) -> Routing:
        """The same routing with every queue, DLQ and rule name prefixed (one per environment)."""
        return Routing(
            event_bus_name=self.event_bus_name,
            rules=tuple(
                Rule(prefix + r.name, r.event_pattern, tuple(prefix + t for t in r.targets))
                for r in self.rules
            ),
            queues=tuple(
                replace(q, name=prefix + q.name, dead_letter_queue=prefix + q.dead_letter_queue)
                for q in self.queues
            ),
        )


def load_routing(path: Path = DEFAULT_RULES_FILE) -> Routing:
    """Read and check the routing file: every rule targets a declared queue."""
    document = json.loads(path.read_text())
    queues = tuple(load_queue_definitions(path))
    declared = {queue.name for queue in queues}
    rules = tuple(
        Rule(str(entry["name"]), dict(entry["event_pattern"]), tuple(entry["targets"]))
        for entry in document["rules"]
    )
    for rule in rules:
        unknown = set(rule.targets) - declared
        if unknown:
            raise ValueError(f"rule {rule.name} targets undeclared queues {sorted(unknown)}")
    return Routing(str(document["event_bus_name"]), rules, queues)


_MISSING = object()


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether an event matches an EventBridge event pattern (every field must match)."""
    for key, expected in pattern.items():
        actual = event.get(key, _MISSING)
        if isinstance(expected, Mapping):
            if not isinstance(actual, Mapping) or not matches(expected, actual):
                return False
        elif not _field_matches(expected, actual):
            return False
    return True


def _field_matches(alternatives: Sequence[Any], actual: Any) -> bool:
    values = actual if isinstance(actual, list) else [actual]
    for alternative in alternatives:
        if isinstance(alternative, Mapping) and "exists" in alternative:
            if bool(alternative["exists"]) == (actual is not _MISSING):
                return True
            continue
        if actual is _MISSING:
            continue
        if any(_value_matches(alternative, value) for value in values):
            return True
    return False


def _value_matches(alternative: Any, value: Any) -> bool:
    if not isinstance(alternative, Mapping):
        return bool(alternative == value)
    if "prefix" in alternative:
        return isinstance(value, str) and value.startswith(str(alternative["prefix"]))
    if "suffix" in alternative:
        return isinstance(value, str) and value.endswith(str(alternative["suffix"]))
    if "anything-but" in alternative:
        excluded = alternative["anything-but"]
        if isinstance(excluded, Mapping):
            return not _value_matches(excluded, value)
        excluded_values = excluded if isinstance(excluded, list) else [excluded]
        return value not in excluded_values
    raise ValueError(f"unsupported event pattern operator {dict(alternative)}")
