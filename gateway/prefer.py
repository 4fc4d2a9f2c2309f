"""The `Prefer` request header (RFC 7240), for the one preference the gateway honours: `wait`.

`Prefer: wait=N` asks the server to answer within N seconds rather than at once, here: to hold
the answer until the order leaves PENDING. Anything the gateway does not understand is ignored,
as RFC 7240 asks (no error): unknown preferences, a `wait` that is not delta-seconds, and every
`wait` after the first. A wait above `MAX_WAIT_SECONDS` is cut to it, and `applied` says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_WAIT_SECONDS = 10
PREFER = "Prefer"
PREFERENCE_APPLIED = "Preference-Applied"


@dataclass(frozen=True)
class WaitPreference:
    """How long the client asked to wait, as the gateway will honour it (0 < seconds <= 10)."""

    seconds: int

    @property
    def applied(self) -> str:
        """The `Preference-Applied` value: the wait as honoured, e.g. `wait=10` for wait=60."""
        return f"wait={self.seconds}"


def wait_preference(headers: Iterable[str]) -> WaitPreference | None:
    """The `wait` preference in the `Prefer` header values, if a usable one is there.

    None when there is no `wait`, when the first one is malformed (not 1*DIGIT) or zero: a wait
    of nothing changes nothing.
    """
    for preference in _preferences(headers):
        name, _, value = preference.partition("=")
        if name.strip().lower() != "wait":
            continue
        seconds = _unquoted(value.strip())
        if not seconds.isascii() or not seconds.isdigit():
            return None  # only the first instance of a preference counts, even a broken one
        capped = min(int(seconds), MAX_WAIT_SECONDS)
        return WaitPreference(capped) if capped > 0 else None
    return None


def _preferences(headers: Iterable[str]) -> Iterator[str]:
    """Each preference's `token[=value]`, its parameters (after `;`) dropped; commas and
    semicolons inside a quoted string do not split."""
    for header in headers:
        for element in _split(header, ","):
            head = _split(element, ";")
            if head and head[0].strip():
                yield head[0].strip()


def _split(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value
