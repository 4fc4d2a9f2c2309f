"""A parsed, checked state machine definition (Amazon States Language)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marketplace_platform.saga.states import state_targets
from workers.saga_engine.asl.errors import InvalidDefinition

SUPPORTED_TYPES = frozenset({"Task", "Pass", "Choice", "Parallel", "Wait", "Succeed", "Fail"})
_TERMINAL_TYPES = frozenset({"Succeed", "Fail", "Choice"})


@dataclass(frozen=True)
class StateMachine:
    """A definition's states, with its Parallel branches parsed into machines of their own."""

    start_at: str
    states: Mapping[str, Mapping[str, Any]]
    timeout_seconds: float | None
    digest: str
    # The definition as canonical JSON (sorted keys, no spaces): the text the digest is taken
    # over, so the definition stored and read back is this machine, digest and all.
    canonical: str = field(repr=False)
    branches: Mapping[str, tuple[StateMachine, ...]] = field(default_factory=dict)

    @classmethod
    def from_definition(cls, definition: Mapping[str, Any]) -> StateMachine:
        """Parse and check a definition given as a JSON object."""
        states = definition.get("States")
        start_at = definition.get("StartAt")
        if not isinstance(states, dict) or not states or not isinstance(start_at, str):
            raise InvalidDefinition("a definition needs StartAt and a non-empty States object")
        if start_at not in states:
            raise InvalidDefinition(f"StartAt {start_at!r} is not a state")
        branches: dict[str, tuple[StateMachine, ...]] = {}
        for name, state in states.items():
            _check_state(name, state, states)
            if state["Type"] == "Parallel":
                branches[name] = tuple(cls.from_definition(b) for b in state["Branches"])
        timeout = definition.get("TimeoutSeconds")
        canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"))
        return cls(
            start_at=start_at,
            states=states,
            timeout_seconds=None if timeout is None else float(timeout),
            digest=hashlib.sha256(canonical.encode()).hexdigest()[:16],
            canonical=canonical,
            branches=branches,
        )

    @classmethod
    def load(cls, path: Path) -> StateMachine:
        """Read a definition file."""
        return cls.from_definition(json.loads(path.read_text(encoding="utf-8")))

    def state(self, name: str) -> Mapping[str, Any]:
        """One state by name."""
        return self.states[name]

    def resources(self) -> set[str]:
        """Every Task Resource in the machine, its Parallel branches included."""
        return set(self._resources())

    def _resources(self) -> Iterator[str]:
        for state in self.states.values():
            if state["Type"] == "Task":
                yield str(state["Resource"])
        for machines in self.branches.values():
            for machine in machines:
                yield from machine._resources()


def _check_state(name: str, state: Any, states: Mapping[str, Any]) -> None:
    if not isinstance(state, dict) or state.get("Type") not in SUPPORTED_TYPES:
        raise InvalidDefinition(f"state {name!r}: Type must be one of {sorted(SUPPORTED_TYPES)}")
    kind = state["Type"]
    for target in state_targets(state):
        if target not in states:
            raise InvalidDefinition(f"state {name!r} goes to unknown state {target!r}")
    if kind not in _TERMINAL_TYPES and "Next" not in state and not state.get("End"):
        raise InvalidDefinition(f"state {name!r} needs Next or End")
    if kind == "Task" and not isinstance(state.get("Resource"), str):
        raise InvalidDefinition(f"task {name!r} needs a Resource")
    if kind == "Parallel" and not state.get("Branches"):
        raise InvalidDefinition(f"parallel state {name!r} needs Branches")
    if kind == "Choice" and not state.get("Choices"):
        raise InvalidDefinition(f"choice state {name!r} needs Choices")
