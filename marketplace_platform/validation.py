"""Field rules declared once in the contracts (protovalidate) and checked at every server."""

from __future__ import annotations

import protovalidate
from google.protobuf.message import Message

from marketplace_platform.errors import FieldViolation, InvalidArgument


def field_violations(message: Message) -> tuple[FieldViolation, ...]:
    """Every rule the message breaks, as field path + description (empty when valid)."""
    try:
        protovalidate.validate(message)
    except protovalidate.ValidationError as error:
        return tuple(_to_field_violation(v) for v in error.violations)
    return ()


def check_request(message: Message) -> None:
    """Raise InvalidArgument listing the broken field rules of a request, if any."""
    violations = field_violations(message)
    if violations:
        fields = ", ".join(v.field or "(message)" for v in violations)
        raise InvalidArgument(f"invalid {message.DESCRIPTOR.name}: {fields}", violations)


def _to_field_violation(violation: protovalidate.Violation) -> FieldViolation:
    proto = violation.proto
    path = []
    elements = proto.field.elements if proto.field is not None else []
    for element in elements:
        # subscript is a oneof (list index or map key); protovalidate gives it as .value
        subscript = getattr(element.subscript, "value", None)
        name = element.field_name
        path.append(
            f"{name}[{subscript!r}]"
            if isinstance(subscript, str)
            else f"{name}[{subscript}]"
            if subscript is not None
            else name
        )
    return FieldViolation(field=".".join(path), description=proto.message, rule=proto.rule_id)
