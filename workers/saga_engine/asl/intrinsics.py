"""Intrinsic functions (`States.Format(...)` and friends) and payload templates, where a key
ending in `.$` takes its value from a path or an intrinsic function."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workers.saga_engine.asl import paths
from workers.saga_engine.asl.errors import INTRINSIC_FAILURE, RUNTIME, StatesError

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:\\.|[^'\\])*')
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<literal>true|false|null)\b
      | (?P<function>States\.[A-Za-z]+)\s*\(
      | (?P<path>\$\$?(?:\.[A-Za-z_][\w\-]*|\[\d+\]|\['[^']*'\])*)
      | (?P<comma>,)
      | (?P<close>\))
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class _Path:
    path: str


def evaluate(expression: str, data: Any, context: Mapping[str, Any]) -> Any:
    """The value of an intrinsic function call against the effective input and context."""
    node, position = _parse(expression, 0)
    if expression[position:].strip():
        raise StatesError(RUNTIME, f"trailing text in intrinsic function: {expression!r}")
    return _evaluate(node, data, context)


def render(template: Any, data: Any, context: Mapping[str, Any]) -> Any:
    """Render Parameters or ResultSelector: `"key.$"` fields read a path or call a function."""
    if isinstance(template, dict):
        rendered: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                if not isinstance(value, str):
                    raise StatesError(RUNTIME, f"{key!r} must be a path or an intrinsic function")
                rendered[key[:-2]] = _dynamic(value, data, context)
            else:
                rendered[key] = render(value, data, context)
        return rendered
    if isinstance(template, list):
        return [render(item, data, context) for item in template]
    return template


def _dynamic(value: str, data: Any, context: Mapping[str, Any]) -> Any:
    if paths.is_path(value):
        return paths.read(value, data, context)
    return evaluate(value, data, context)


def _parse(text: str, position: int) -> tuple[Any, int]:
    token = _TOKEN.match(text, position)
    if token is None:
        raise StatesError(RUNTIME, f"cannot parse intrinsic function at {text[position:]!r}")
    kind = token.lastgroup
    end = token.end()
    if kind == "string":
        raw = token.group("string")[1:-1]
        return re.sub(r"\\(.)", r"\1", raw), end
    if kind == "number":
        number = token.group("number")
        return (float(number) if "." in number else int(number)), end
    if kind == "literal":
        return {"true": True, "false": False, "null": None}[token.group("literal")], end
    if kind == "path":
        return _Path(token.group("path")), end
    if kind == "function":
        args: list[Any] = []
        closing = _TOKEN.match(text, end)
        if closing is not None and closing.lastgroup == "close":
            return _Call(token.group("function"), ()), closing.end()
        while True:
            arg, end = _parse(text, end)
            args.append(arg)
            separator = _TOKEN.match(text, end)
            if separator is None or separator.lastgroup not in ("comma", "close"):
                raise StatesError(RUNTIME, f"expected ',' or ')' in {text!r}")
            end = separator.end()
            if separator.lastgroup == "close":
                return _Call(token.group("function"), tuple(args)), end
    raise StatesError(RUNTIME, f"unexpected {token.group(0)!r} in {text!r}")


def _evaluate(node: Any, data: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(node, _Path):
        return paths.read(node.path, data, context)
    if isinstance(node, _Call):
        function = _FUNCTIONS.get(node.name)
        if function is None:
            raise StatesError(RUNTIME, f"unsupported intrinsic function {node.name}")
        args = [_evaluate(arg, data, context) for arg in node.args]
        try:
            return function(*args)
        except StatesError:
            raise
        except (TypeError, ValueError) as exc:
            raise StatesError(INTRINSIC_FAILURE, f"{node.name}: {exc}") from exc
    return node


def _format(template: str, *args: Any) -> str:
    pieces = re.split(r"(?<!\\)\{\}", template)
    if len(pieces) - 1 != len(args):
        raise ValueError(f"{len(pieces) - 1} placeholders for {len(args)} arguments")
    out = [pieces[0]]
    for arg, piece in zip(args, pieces[1:], strict=True):
        out.append(arg if isinstance(arg, str) else json.dumps(arg, separators=(",", ":")))
        out.append(piece)
    return "".join(out).replace("\\{", "{").replace("\\}", "}")


def _math_add(left: Any, right: Any) -> int:
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in (left, right)):
        raise ValueError("States.MathAdd takes two integers")
    return int(left) + int(right)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "States.Format": _format,
    "States.StringToJson": lambda text: json.loads(text),
    "States.JsonToString": lambda value: json.dumps(value, separators=(",", ":")),
    "States.Array": lambda *values: list(values),
    "States.MathAdd": _math_add,
    "States.UUID": lambda: str(uuid.uuid4()),
}
