"""The JSONPath subset Step Functions supports in paths: `$`, `$.a.b`, `$.a[0]`, `$['a']`,
and `$$.` for the context object; plus ResultPath's write side."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from workers.saga_engine.asl.errors import RESULT_PATH_MATCH_FAILURE, RUNTIME, StatesError

Segment = str | int

_SEGMENT = re.compile(
    r"""\.(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)   # .name
      | \[(?P<index>\d+)\]                     # [0]
      | \['(?P<quoted>[^']*)'\]                # ['name with spaces']
    """,
    re.VERBOSE,
)


def parse(path: str) -> tuple[bool, tuple[Segment, ...]]:
    """Split a path into (refers to the context object, segments); raise on anything else."""
    if path.startswith("$$"):
        context, rest = True, path[2:]
    elif path.startswith("$"):
        context, rest = False, path[1:]
    else:
        raise StatesError(RUNTIME, f"not a path: {path!r}")
    segments: list[Segment] = []
    position = 0
    while position < len(rest):
        found = _SEGMENT.match(rest, position)
        if found is None:
            raise StatesError(RUNTIME, f"unsupported path syntax: {path!r}")
        if found.group("index") is not None:
            segments.append(int(found.group("index")))
        else:
            segments.append(found.group("name") or found.group("quoted"))
        position = found.end()
    return context, tuple(segments)


def is_path(value: object) -> bool:
    """Whether a string is a path (as opposed to an intrinsic function call)."""
    return isinstance(value, str) and value.startswith("$")


def read(path: str, data: Any, context: Mapping[str, Any]) -> Any:
    """The value at `path` in `data` (or in the context object for `$$`); missing is an error."""
    found, value = lookup(path, data, context)
    if not found:
        raise StatesError(RUNTIME, f"the path {path!r} does not exist in the input")
    return value


def lookup(path: str, data: Any, context: Mapping[str, Any]) -> tuple[bool, Any]:
    """(True, value) at `path`, or (False, None) when some segment is missing."""
    in_context, segments = parse(path)
    current: Any = context if in_context else data
    for segment in segments:
        if isinstance(segment, int):
            if not isinstance(current, list) or segment >= len(current):
                return False, None
        elif not isinstance(current, dict) or segment not in current:
            return False, None
        current = current[segment]
    return True, current


def write(path: str | None, data: Any, value: Any) -> Any:
    """Apply ResultPath: `value` put into a copy of `data` at `path` (None keeps `data`)."""
    if path is None:
        return data
    in_context, segments = parse(path)
    if in_context or any(isinstance(segment, int) for segment in segments):
        raise StatesError(RUNTIME, f"ResultPath may only name fields: {path!r}")
    if not segments:
        return value
    result = copy.deepcopy(data)
    if not isinstance(result, dict):
        raise StatesError(RESULT_PATH_MATCH_FAILURE, f"cannot set {path!r} on a non-object input")
    current = result
    for segment in segments[:-1]:
        assert isinstance(segment, str)
        child = current.setdefault(segment, {})
        if not isinstance(child, dict):
            raise StatesError(RESULT_PATH_MATCH_FAILURE, f"{path!r} runs through a non-object")
        current = child
    last = segments[-1]
    assert isinstance(last, str)
    current[last] = value
    return result
