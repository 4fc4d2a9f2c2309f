"""The live progress line of chaos, drills and benchmarks: what it says, and how often it
speaks where the output is not a terminal."""

from __future__ import annotations

import io

from tests.support.clock import ManualClock
from verification.progress import ProgressLine, render


def test_the_line_says_done_of_total_rate_and_elapsed() -> None:
    assert render("checkouts", 120, 400, 75.0) == "checkouts 120/400 (30%)  1.6/s  elapsed 1:15"
    assert render("steps", 0, 3, 0.0) == "steps 0/3 (0%)  0.0/s  elapsed 0:00"


def test_a_plain_stream_gets_a_line_every_few_seconds_and_the_last_one() -> None:
    clock, out = ManualClock(), io.StringIO()
    line = ProgressLine("checkouts", 10, stream=out, tty=False, every=5.0, clock=clock)
    for done in range(1, 10):
        clock.now += 1.0  # one checkout a second: lines at 1 s, 6 s, then the last at 10 s
        line.update(done)
    clock.now += 1.0
    line.update(10)
    line.update(10)  # after the end, nothing more is shown
    lines = out.getvalue().splitlines()
    assert lines == [
        "checkouts 1/10 (10%)  1.0/s  elapsed 0:01",
        "checkouts 6/10 (60%)  1.0/s  elapsed 0:06",
        "checkouts 10/10 (100%)  1.0/s  elapsed 0:10",
    ]
    assert "\r" not in out.getvalue()
    assert line.samples[-1] == (10.0, 10)


def test_a_terminal_line_is_rewritten_in_place_and_ended_once() -> None:
    clock, out = ManualClock(), io.StringIO()
    line = ProgressLine("orders", 2, stream=out, tty=True, every=0.1, clock=clock)
    clock.now += 2.0
    line.update(1)
    clock.now += 2.0
    line.update(2)
    line.finish()
    text = out.getvalue()
    assert text.count("\r") == 2
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "orders 2/2 (100%)  0.5/s  elapsed 0:04" in text.split("\r")[-1]
