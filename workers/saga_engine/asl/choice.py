"""Choice rules: `Variable` with a comparison, And/Or/Not, evaluated against the state's input."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from workers.saga_engine.asl import paths
from workers.saga_engine.asl.errors import RUNTIME, StatesError


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _strings(op: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    return lambda left, right: isinstance(left, str) and isinstance(right, str) and op(left, right)


def _numbers(op: Callable[[float, float], bool]) -> Callable[[Any, Any], bool]:
    return lambda left, right: _number(left) and _number(right) and op(left, right)


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "StringEquals": _strings(lambda a, b: a == b),
    "StringLessThan": _strings(lambda a, b: a < b),
    "StringGreaterThan": _strings(lambda a, b: a > b),
    "StringLessThanEquals": _strings(lambda a, b: a <= b),
    "StringGreaterThanEquals": _strings(lambda a, b: a >= b),
    "NumericEquals": _numbers(lambda a, b: a == b),
    "NumericLessThan": _numbers(lambda a, b: a < b),
    "NumericGreaterThan": _numbers(lambda a, b: a > b),
    "NumericLessThanEquals": _numbers(lambda a, b: a <= b),
    "NumericGreaterThanEquals": _numbers(lambda a, b: a >= b),
    "BooleanEquals": lambda a, b: isinstance(a, bool) and isinstance(b, bool) and a == b,
}

_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda value: value is None,
    "IsString": lambda value: isinstance(value, str),
    "IsNumeric": _number,
    "IsBoolean": lambda value: isinstance(value, bool),
}


def choose(state: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> str | None:
    """The `Next` of the first matching choice rule, else the `Default` (None if there is none)."""
    for rule in state.get("Choices", []):
        if evaluate(rule, data, context):
            return str(rule["Next"])
    default = state.get("Default")
    return None if default is None else str(default)


def evaluate(rule: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> bool:
    """Whether one (possibly compound) choice rule holds for `data`."""
    if "And" in rule:
        return all(evaluate(inner, data, context) for inner in rule["And"])
    if "Or" in rule:
        return any(evaluate(inner, data, context) for inner in rule["Or"])
    if "Not" in rule:
        return not evaluate(rule["Not"], data, context)
    variable = rule.get("Variable")
    if not isinstance(variable, str):
        raise StatesError(RUNTIME, f"choice rule without Variable: {dict(rule)}")
    if "IsPresent" in rule:
        found, _ = paths.lookup(variable, data, context)
        return found is bool(rule["IsPresent"])
    value = paths.read(variable, data, context)
    for name, test in _TYPE_TESTS.items():
        if name in rule:
            return test(value) is bool(rule[name])
    for name, compare in _COMPARISONS.items():
        if name in rule:
            return compare(value, rule[name])
        if f"{name}Path" in rule:
            return compare(value, paths.read(rule[f"{name}Path"], data, context))
    raise StatesError(RUNTIME, f"unsupported choice rule: {dict(rule)}")
