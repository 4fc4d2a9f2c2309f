"""The live progress line of long runs (chaos, drills, benchmarks): done/total, rate, elapsed.

On a terminal the line is rewritten in place with a carriage return; anywhere else (CI logs,
a pipe) a plain line is printed at most every `every` seconds, so logs stay readable. The
line goes to stderr: stdout keeps the report, which tests and scripts read."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

PLAIN_EVERY_SECONDS = 5.0  # the cadence of plain lines where the stream is not a terminal
TTY_EVERY_SECONDS = 0.1  # a terminal is redrawn no faster than this


def render(label: str, done: int, total: int, elapsed: float) -> str:
    """`label 120/400 (30%)  12.3/s  elapsed 0:09`: what the line says at one moment."""
    share = done / total if total else 1.0
    rate = done / elapsed if elapsed > 0 else 0.0
    minutes, seconds = divmod(int(elapsed), 60)
    return f"{label} {done}/{total} ({share:.0%})  {rate:.1f}/s  elapsed {minutes}:{seconds:02d}"


class ProgressLine:
    """Shows `update(done)` calls as one line; the line ends (newline) when done reaches total
    or `finish()` is called. Keeps (elapsed, done) samples for plots."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._every = every if every is not None else (
            TTY_EVERY_SECONDS if self._tty else PLAIN_EVERY_SECONDS
        )  # fmt: skip
        self._clock = clock
        self._started = clock()
        self._shown_at: float | None = None
        self._finished = False
        self.done = 0
        self.samples: list[tuple[float, int]] = []

    @property
    def elapsed(self) -> float:
        """Seconds since the line was created."""
        return self._clock() - self._started

    def update(self, done: int) -> None:
        """`done` of `total` finished now; shown if the cadence allows (always at the end)."""
        self.done = done
        elapsed = self.elapsed
        self.samples.append((elapsed, done))
        if self._finished:
            return
        if done >= self.total:
            self.finish()
            return
        if self._shown_at is not None and elapsed - self._shown_at < self._every:
            return
        self._show(elapsed)

    def finish(self) -> None:
        """Show the final figures and end the line (once)."""
        if self._finished:
            return
        self._finished = True
        self._show(self.elapsed)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _show(self, elapsed: float) -> None:
        self._shown_at = elapsed
        text = render(self.label, self.done, self.total, elapsed)
        # On a terminal, pad with spaces: a shorter line must hide the end of a longer one.
        self._stream.write(f"\r{text:<72}" if self._tty else f"{text}\n")
        self._stream.flush()
