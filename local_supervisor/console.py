"""One writer for every process's output, so lines never interleave mid-line."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TextIO

SUPERVISOR = "supervisor"


class PrefixedConsole:
    """Writes whole lines to one stream, each prefixed with a padded process name."""

    def __init__(self, stream: TextIO, *, names: Iterable[str] = ()) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._width = len(SUPERVISOR)
        self.widen(names)

    def widen(self, names: Iterable[str]) -> None:
        """Make the name column wide enough for these names (call before their output starts)."""
        self._width = max([self._width, *(len(name) for name in names)])

    def line(self, name: str, text: str) -> None:
        """Write one line of `name`'s output."""
        with self._lock:
            try:
                self._stream.write(f"{name.ljust(self._width)} | {text}\n")
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                # The reader went away (`make run | head`) or the stream is closed at exit;
                # losing log lines must not take the supervisor down.
                pass

    def say(self, text: str) -> None:
        """Write one of the supervisor's own lines."""
        self.line(SUPERVISOR, text)
