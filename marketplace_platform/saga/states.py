"""What an Amazon States Language state says about its place in the machine, read the same by
the local engine's definition check and the operator console's graph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def state_targets(state: Mapping[str, Any]) -> list[Any]:
    """The states `state` may go to, as written: its Next, its Choices' and Default's, its Catch
    targets, in that order (a rule's or catcher's missing Next comes out as None)."""
    targets = [state["Next"]] if "Next" in state else []
    targets += [rule.get("Next") for rule in state.get("Choices", [])]
    targets += [state["Default"]] if "Default" in state else []
    targets += [catcher.get("Next") for catcher in state.get("Catch", [])]
    return targets
