"""Translation between the state machine's JSON and the services' protobuf messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marketplace.common.v1 import ids_pb2, money_pb2
from saga_tasks.errors import StepFailed


def field(event: Mapping[str, Any], name: str) -> Any:
    """A field of the state's input; a missing one is a defect of the definition, not retried."""
    try:
        return event[name]
    except KeyError:
        raise StepFailed(f"the state's input has no {name!r}") from None


def order_id(event: Mapping[str, Any]) -> ids_pb2.OrderId:
    """The order the saga runs for."""
    return ids_pb2.OrderId(value=str(field(event, "order_id")))


def step_key(event: Mapping[str, Any], step: str) -> str:
    """The idempotency key of one step of one order: `<order_id>:<step>`."""
    return f"{field(event, 'order_id')}:{step}"


def money_from_json(value: Mapping[str, Any]) -> money_pb2.Money:
    """{"amount_minor": int, "currency": str} as Money."""
    return money_pb2.Money(amount_minor=int(value["amount_minor"]), currency=str(value["currency"]))


def money_to_json(value: money_pb2.Money) -> dict[str, Any]:
    """Money as {"amount_minor": int, "currency": str}."""
    return {"amount_minor": value.amount_minor, "currency": value.currency}
