"""Reading request parameters from a JSON object, refusing what does not fit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from simulators.psp.errors import InvalidRequest

MAX_AMOUNT = 2**53 - 1  # exact in every JSON parser


def reject_unknown(params: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse parameters this endpoint does not take (a typo must not pass silently)."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidRequest(
            f"Received unknown parameter: {unknown[0]}", code="parameter_unknown", param=unknown[0]
        )


def amount(params: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    """A positive integer of minor units."""
    value = params.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(
            f"{name} must be an integer of minor units",
            code="parameter_invalid_integer",
            param=name,
        )
    if value <= 0:
        raise InvalidRequest(
            f"{name} must be positive", code="parameter_invalid_integer", param=name
        )
    if value > MAX_AMOUNT:
        raise InvalidRequest(f"{name} is too large", code="amount_too_large", param=name)
    return value


def text(params: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    """A non-empty string."""
    value = params.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(
            f"{name} must be a non-empty string", code="parameter_invalid_string", param=name
        )
    return value


def currency(params: Mapping[str, Any], name: str = "currency") -> str:
    """A three-letter currency code, upper-cased."""
    value = text(params, name, required=True)
    assert value is not None
    if len(value) != 3 or not (value.isascii() and value.isalpha()):
        raise InvalidRequest(
            f"{name} must be a three-letter ISO code", code="parameter_invalid_string", param=name
        )
    return value.upper()


def string_map(params: Mapping[str, Any], name: str) -> dict[str, str]:
    """A JSON object of strings to strings (absent: empty)."""
    value = params.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise InvalidRequest(
            f"{name} must be an object of strings", code="parameter_invalid_string", param=name
        )
    return dict(value)


def _missing(name: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required param: {name}", code="parameter_missing", param=name)
